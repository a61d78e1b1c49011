#!/usr/bin/env bash
# Copy what a later session needs to resume the confirmation into DEST, laid out as the bench
# directories themselves: cells.csv / priors.csv / tables.md, every stage record (stage.json,
# .running.json), the small stage outputs (index files, labels, to_annotate), the shared
# backbone, each cell's metrics.csv and log.txt, and the latest USB checkpoint of each cell
# still training (one whose train/ holds a .running.json; a finished cell's report reads only
# its metrics.csv and log.txt, so its checkpoint is dropped). Left out as well: the
# 30 MB feature matrix and the 2.4 MB priors, which the bench recomputes (a cache hit
# downstream when the recomputed bits are the same).
#   ./export.sh /work/main/docs/results/fashion_mnist_long_confirm
# Other bench directories: ./export.sh DEST SRC 'GLOB' (the bench directories SRC/GLOB), e.g.
#   ./export.sh /work/main/docs/results/fashion_mnist_prior_uniform /work/runs/calib/fm 's*'
set -eu
DEST=$1
SRC=${2:-/work/runs/bench15}
GLOB=${3:-confirm*_s*}  # the 1- and the 4-labels/class directories
cd "$SRC"
# a cell is still training while its train/ (two levels above usb/latest_model.pth) holds a
# .running.json; relative paths, read in SRC
running() { [ -e "$(dirname "$(dirname "$1")")/.running.json" ]; }
for d in $GLOB; do
  [ -d "$d" ] || continue
  find "$d" -type f \( -name stage.json -o -name .running.json -o -name '*_idx.npy' \
       -o -name '*_idx.npy.json' -o -name labels.csv -o -name to_annotate.csv -o -name cells.csv \
       -o -name priors.csv -o -name tables.md -o -name metrics.csv -o -name log.txt \
       -o -name backbone.pth -o -name latest_model.pth -o -name 'prior.npy.json' \) \
       -not -path '*/plots/*' | while read -r f; do
    if [ "$(basename "$f")" = latest_model.pth ] && ! running "$f"; then continue; fi
    mkdir -p "$DEST/$(dirname "$f")"; cp -p "$f" "$DEST/$f"; done
done
# a cell that finished since the last export has no .running.json any more: drop the old
# copies of it and of its checkpoint
(cd "$DEST" && find $GLOB -name .running.json) | while read -r f; do
  [ -e "$f" ] || rm -f "$DEST/$f"; done
(cd "$DEST" && find $GLOB -name latest_model.pth) | while read -r f; do
  running "$f" || rm -f "$DEST/$f"; done
du -sh "$DEST"
