#!/usr/bin/env bash
# Resume the confirmation grid on a fresh disk: the frozen worktree (commit 60bf6bb), the bench
# directories copied back from this folder (those already there are kept), then one
# background process per seed (one thread, nice 5), each logging to RUNS/confirm_sS.log.
#   bash docs/results/fashion_mnist_long_confirm/resume.sh 5 6     # after bash .ci/setup
# A seed with no directory here yet (7-9) starts from the shared backbone of confirm_s5.
# The 1-label cells read bench_long_confirm_frozen.yaml (main's bench_long_confirm.yaml without
# the report-only keys, copied into the worktree; since 2026-12-07 its priority runs
# typiclust + as3l_remove before probcover and freematch; no cell key changes).
# PER_CLASS=4 runs the 4-labels/class part instead (bench_long_confirm_4perclass.yaml, copied
# into the worktree without its report-only keys as bench_long_confirm_4perclass_frozen.yaml),
# into RUNS/confirm4_sS, on the same frozen code; merge those with main's config. Each process
# runs its seed's priority cells only (6 at 1 label/class, 3 at 4), not the rest of the grid;
# PER_CLASS=4 CELLS=5 adds the two 4-label cells that split AS3L's result into its labels and
# its prior (as3l + flexmatch, typiclust + as3l_remove).
# RUNS (default /work/runs/bench15) and WT (default /work/bench15) can be set.
set -eu
# The grid ran on AVX2-only machines (float32, no bfloat16 autocast). On a CPU with AVX-512 /
# AMX, oneDNN, ATen and MKL pick other kernels: the shared features come out with other bits
# (every stage key downstream changes and the cells restart) and cpu_bf16 'auto' turns
# bfloat16 on. Pinning the three to AVX2 reproduces the features bit for bit (sha256
# 04b92a1c..., checked on an Intel Xeon with AVX-512 BF16 / AMX on 2026-12-07) and keeps
# float32; on an AVX2 machine it changes nothing.
export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=AVX2
[ $# -ge 1 ] || { echo "usage: $0 SEED [SEED ...]" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
MAIN=$(git -C "$HERE" rev-parse --show-toplevel)
RUNS=${RUNS:-/work/runs/bench15}
WT=${WT:-/work/bench15}
[ -x "$MAIN/.venv/bin/as3l" ] || { echo "$MAIN/.venv/bin/as3l: missing; run bash .ci/setup first" >&2; exit 2; }
[ -d "$WT" ] || git -C "$MAIN" worktree add "$WT" 60bf6bb --detach
PER_CLASS=${PER_CLASS:-1}
case $PER_CLASS in
  1) CONFIG=usb_configs/fashion_mnist/bench_long_confirm_frozen.yaml; PREFIX=confirm_s; CELLS=6
     cp "$HERE/bench_long_confirm_frozen.yaml" "$WT/$CONFIG" ;;
  4) CONFIG=usb_configs/fashion_mnist/bench_long_confirm_4perclass_frozen.yaml; PREFIX=confirm4_s
     CELLS=${CELLS:-3}
     case $CELLS in 3|4|5) ;; *) echo "CELLS=$CELLS: must be 3, 4 or 5" >&2; exit 2 ;; esac
     cp "$HERE/bench_long_confirm_4perclass_frozen.yaml" "$WT/$CONFIG" ;;
  *) echo "PER_CLASS=$PER_CLASS: must be 1 or 4" >&2; exit 2 ;;
esac
mkdir -p "$RUNS"
for d in "$HERE"/confirm_s* "$HERE"/confirm4_s*; do
  [ -d "$d" ] || continue
  [ -d "$RUNS/$(basename "$d")" ] || cp -r "$d" "$RUNS/"
done
for S in "$@"; do
  out=$RUNS/$PREFIX$S
  # --max-cells counts the cells a process starts, so give it only the priority cells still
  # missing from cells.csv (finished cells are its rows); more would start the rest of the grid
  done_cells=0
  [ -f "$out/cells.csv" ] && done_cells=$(($(wc -l < "$out/cells.csv") - 1))
  left=$((CELLS - done_cells))
  if [ "$left" -le 0 ]; then echo "seed $S ($PER_CLASS label(s)/class): its $CELLS cells are done"; continue; fi
  mkdir -p "$out/shared"
  [ -d "$out/shared/pretrain_seed5" ] || cp -r "$RUNS/confirm_s5/shared/pretrain_seed5" "$out/shared/"
  (cd "$WT" && PYTHONPATH=$WT OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
     nohup nice -n 5 "$MAIN/.venv/bin/as3l" bench --config "$CONFIG" \
     --seeds "$S" --max-cells "$left" --out "$out" >> "$RUNS/$PREFIX$S.log" 2>&1 &)
  echo "seed $S ($PER_CLASS label(s)/class): $left cell(s) to run, log $RUNS/$PREFIX$S.log"
done
