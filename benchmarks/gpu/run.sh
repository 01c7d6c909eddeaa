#!/usr/bin/env bash
# The accelerator check in one shot, on a machine with a GPU and a CUDA jaxlib:
#
#   bash benchmarks/gpu/run.sh [--wheelhouse DIR] [--out DIR] [--dry-run] [--budget SECONDS]
#
# With --wheelhouse (see wheelhouse.sh) the missing packages are installed from DIR without a
# network, into a folder of their own on PYTHONPATH; without it the machine's Python must
# already have distbench's dependencies (`pip install -e .`). The check itself is
# `python -m benchmarks.gpu_check`: it writes gpu_check.json and README.md to --out
# (default results/gpu) after every step. --dry-run runs it at toy sizes on any platform.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WHEELHOUSE=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    --out|--budget) ARGS+=("$1" "$2"); shift 2 ;;
    --dry-run) ARGS+=("$1"); shift ;;
    *) echo "distbench: unknown argument $1 (valid: --wheelhouse DIR, --out DIR, --dry-run, --budget SECONDS)" >&2; exit 2 ;;
  esac
done
if [ -n "$WHEELHOUSE" ]; then
  if ! ls "$WHEELHOUSE"/*.whl > /dev/null 2>&1; then
    echo "distbench: --wheelhouse $WHEELHOUSE holds no wheels (build it with benchmarks/gpu/wheelhouse.sh)" >&2
    exit 2
  fi
  SITE=${TMPDIR:-/tmp}/distbench-site
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELHOUSE"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" -m benchmarks.gpu_check "${ARGS[@]}"
