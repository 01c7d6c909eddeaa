#!/usr/bin/env bash
# Build the wheelhouse for an offline GPU machine, on a machine that can reach PyPI.
#
#   bash benchmarks/gpu/wheelhouse.sh [DIR]      # DIR defaults to wheelhouse/ (git-ignored)
#
# A bare JAX GPU image (Python 3.12, x86-64, with jax, flax, optax, chex, numpy, scipy,
# matplotlib and rich) lacks gymnax, rlax, distrax and what they need; this downloads those
# wheels for that Python and platform, pinned to the versions distbench is tested with.
# benchmarks/gpu/run.sh --wheelhouse DIR installs them there without a network.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-wheelhouse}
PYTHON=${PYTHON:-python3}
WHEELS=(
  gymnax==1.0.1 gymnasium==1.3.0 farama-notifications==0.0.6
  rlax==0.1.9 distrax==0.1.9 dm-env==1.6 dm-tree==0.1.10
  tfp-nightly==0.26.0.dev20261027 decorator==5.3.1 gast==0.7.0 tzdata==2026.6
)
PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done
mkdir -p "$DIR"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d "$DIR" "${WHEELS[@]}"
echo "wheelhouse: $(ls "$DIR" | wc -l) wheels in $DIR ($(du -sh "$DIR" | cut -f1))"
