#!/bin/bash
STEPS=100000
OUT=/work/baseline/speed9
mkdir -p $OUT
cd /work/main
log() { echo "$1 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT/log.txt; }
pj() { XLA_FLAGS="$2" /work/bvenv/bin/python /work/baseline/run_purejaxrl.py 64 $STEPS 2>/dev/null | tail -1 > $OUT/$1.json; log $1; }
log start
pj purejaxrl_before ""
for a in dqn c51 qrdqn iqn edrl; do
  /work/venv/bin/python -m benchmarks train --agent $a --env CartPole-v1 --seeds 64 --steps $STEPS --evals 2 --quiet --out $OUT/$a.json > $OUT/$a.txt 2>&1
  log $a
done
pj purejaxrl_after ""
log done
