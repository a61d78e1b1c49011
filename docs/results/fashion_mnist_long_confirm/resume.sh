#!/usr/bin/env bash
# Resume the confirmation grid on a fresh disk: the frozen worktree (commit 60bf6bb), the bench
# directories copied back from this folder (those already there are kept), then one
# background process per seed (one thread, nice 5), each logging to RUNS/confirm_sS.log.
#   bash docs/results/fashion_mnist_long_confirm/resume.sh 5 6     # after bash .ci/setup
# A seed with no directory here yet (7-9) starts from the shared backbone of confirm_s5.
# RUNS (default /work/runs/bench15) and WT (default /work/bench15) can be set.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 SEED [SEED ...]" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
MAIN=$(git -C "$HERE" rev-parse --show-toplevel)
RUNS=${RUNS:-/work/runs/bench15}
WT=${WT:-/work/bench15}
[ -x "$MAIN/.venv/bin/as3l" ] || { echo "$MAIN/.venv/bin/as3l: missing; run bash .ci/setup first" >&2; exit 2; }
[ -d "$WT" ] || git -C "$MAIN" worktree add "$WT" 60bf6bb --detach
mkdir -p "$RUNS"
for d in "$HERE"/confirm_s*; do
  [ -d "$RUNS/$(basename "$d")" ] || cp -r "$d" "$RUNS/"
done
for S in "$@"; do
  out=$RUNS/confirm_s$S
  mkdir -p "$out/shared"
  [ -d "$out/shared/pretrain_seed5" ] || cp -r "$RUNS/confirm_s5/shared/pretrain_seed5" "$out/shared/"
  (cd "$WT" && PYTHONPATH=$WT OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
     nohup nice -n 5 "$MAIN/.venv/bin/as3l" bench --config usb_configs/fashion_mnist/bench_long_confirm.yaml \
     --seeds "$S" --max-cells 6 --out "$out" >> "$RUNS/confirm_s$S.log" 2>&1 &)
  echo "seed $S: started, log $RUNS/confirm_s$S.log"
done
