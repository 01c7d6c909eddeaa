#!/bin/bash
# Three interleaved rounds of PureJaxRL, C51, IQN, EDRL (64 seeds x 100k) for per-round ratios.
STEPS=100000
OUT=/work/baseline/speed10
mkdir -p $OUT
cd /work/main
log() { echo "$1 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT/log.txt; }
log start
for r in 1 2 3; do
  /work/bvenv/bin/python /work/baseline/run_purejaxrl.py 64 $STEPS 2>/dev/null | tail -1 > $OUT/purejaxrl_$r.json; log purejaxrl_$r
  for a in c51 iqn edrl; do
    /work/venv/bin/python -m benchmarks train --agent $a --env CartPole-v1 --seeds 64 --steps $STEPS --evals 2 --quiet --out $OUT/${a}_$r.json > $OUT/${a}_$r.txt 2>&1
    log ${a}_$r
  done
done
log done
