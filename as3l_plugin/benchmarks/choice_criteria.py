"""Compare label-free criteria of :func:`~as3l_plugin.features.choose_features` on cached
feature sets (issue 14).

Run::

    python -m as3l_plugin.benchmarks.choice_criteria --set NAME --dataset digits \\
        --checkpoint random:0 --seeds 0-2 --work runs/c14
    python -m as3l_plugin.benchmarks.choice_criteria --report runs/c14 \\
        --sets A,B,C --criteria cross_view,duel

``--checkpoint random:S`` is a random-init ``cnn4`` (``torch.manual_seed(S)``), else a
``backbone.pth``. For every budget (``--per-class``, default 1 and 4 per class) and seed,
the candidates ``pixels`` (PCA-50), ``self`` and ``fine`` (Eq. 1, ``K = budget``, fitted
with the seed, as the pipeline does) and the ``judge`` criterion's outside view (``hog``:
HOG of the images) are cached under ``WORK/NAME/`` with each one's prior
accuracy (``as3l`` selection + ``seeded_kmeans`` prior, the labels of the selected rows;
``priors.json``). The priors do not depend on the criterion, so ``--report`` scores every
criterion on the cached features in seconds and prints, per set and budget, every
candidate's mean prior, each criterion's mean prior of its picks and its gap to the best
candidate (mean over seeds); ``--coverage`` adds how many classes each candidate's selection
covers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _checkpoint(spec: str, ds, work: Path) -> Path:
    """``backbone.pth`` path, or ``random:S``: a random-init cnn4 saved as one."""
    if not spec.startswith("random:"):
        return Path(spec)
    import torch

    from ..features.backbone import BACKBONE_FORMAT, build_backbone, encoder_state, torch_bytes
    from ..io import atomic_write_bytes
    seed = int(spec.split(":", 1)[1])
    path = work / f"random_init_{ds.name}_{seed}.pth"
    if not path.is_file():
        net = "cnn4" if ds.in_channels == 1 else "cnn4_rgb"
        torch.manual_seed(seed)
        b = build_backbone(net)
        atomic_write_bytes(path, torch_bytes({
            "model": encoder_state(b), "net": net, "dataset": ds.name,
            "format": BACKBONE_FORMAT, "num_features": b.num_features,
            "in_channels": ds.in_channels, "image_size": ds.image_size, "mean": ds.mean,
            "std": ds.std, "epochs": 0}))
    return path


def build(name, dataset, checkpoint, *, seeds, per_class=(1, 4), work: Path, log=print):
    from ..datasets import load_dataset
    from ..features.choose import hog_features, pixel_features
    from ..features.extract import extract_features
    from ..features.finetune import finetune_features
    from ..io import atomic_write_text
    from .features_quality import as3l_prior

    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(dataset, progress=False)
    y, C = np.asarray(ds.y_train), ds.num_classes
    ck = _checkpoint(checkpoint, ds, work)
    for fname, make in (("pixels", lambda: pixel_features(ds.x_train)),
                        ("hog", lambda: hog_features(ds.x_train)),
                        ("self", lambda: extract_features(ck, ds, split="train",
                                                          progress=False))):
        if not (d / f"{fname}.npy").is_file():
            np.save(d / f"{fname}.npy", make())
    (d / "meta.json").write_text(json.dumps({"dataset": dataset, "checkpoint": str(ck),
                                             "spec": checkpoint}))
    pj = d / "priors.json"
    pri = json.loads(pj.read_text()) if pj.is_file() else {}
    feats = {k: np.load(d / f"{k}.npy") for k in ("pixels", "self")}
    for pc in per_class:
        B = pc * C
        for s in seeds:
            key = f"{B}_{s}"
            if key in pri:
                continue
            t = time.perf_counter()
            fp = d / f"fine_{key}.npy"
            if not fp.is_file():
                np.save(fp, finetune_features(feats["self"], budget=B, seed=s,
                                              progress=False))
            cand = dict(feats, fine=np.load(fp))
            pri[key] = {k: float(as3l_prior(X, y, C, s, budget=B)[0]) for k, X in cand.items()}
            atomic_write_text(pj, json.dumps(pri, indent=1))
            log(f"{name} B={B} seed {s}: " + "  ".join(f"{k} {100 * v:.1f}"
                                                         for k, v in pri[key].items())
                + f"  ({time.perf_counter() - t:.0f} s)")
    return pri


def picks(d: Path, criterion: str, **kw):
    """{(B, seed): (pick, scores)} for criterion on the cached set ``d``."""
    from ..features import choose as ch
    from ..features.choose import choose_features
    if not hasattr(ch, "_uncached"):  # one agreement matrix per case for every criterion
        ch._uncached, ch._cache = ch._agreement, {}

        def cached(c, b, **kw):
            key = (ch._case, tuple(c), b, tuple(sorted(kw.items())))
            if key not in ch._cache:
                ch._cache[key] = ch._uncached(c, b, **kw)
            return ch._cache[key]
        ch._agreement = cached
    pri = json.loads((d / "priors.json").read_text())
    feats = {k: np.load(d / f"{k}.npy") for k in ("pixels", "self")}
    if criterion == "judge":  # the outside view the pipeline passes: HOG of the images
        kw = dict(kw, judge=np.load(d / "hog.npy"))
    out = {}
    for key in pri:
        B, s = (int(v) for v in key.split("_"))
        cand = dict(feats, fine=np.load(d / f"fine_{key}.npy"))
        cand = {k: cand[k] for k in ("pixels", "self", "fine")}
        ch._case = (str(d), key)
        out[B, s] = choose_features(cand, B, seed=s, criterion=criterion, **kw)
    return out


def coverage(d: Path, log=print):
    """Mean number of classes the ``as3l`` selection covers on each cached candidate, per
    budget (the selection of :func:`build`'s priors; labels are read for this report only)."""
    from ..datasets import load_dataset
    from ..selection import get_sampler
    meta = json.loads((d / "meta.json").read_text())
    y = np.asarray(load_dataset(meta["dataset"], progress=False).y_train)
    feats = {k: np.load(d / f"{k}.npy") for k in ("pixels", "self")}
    got = {}
    for key in json.loads((d / "priors.json").read_text()):
        B, s = (int(v) for v in key.split("_"))
        cand = dict(feats, fine=np.load(d / f"fine_{key}.npy"))
        for k, X in cand.items():
            idx = get_sampler("as3l").select(X, B, seed=s)
            got.setdefault(B, {}).setdefault(k, []).append(len(np.unique(y[idx])))
    for B, per in sorted(got.items()):
        log(f"{d.name} B={B}: classes covered, mean over {len(per['self'])} seeds: " + ", ".join(
            f"{k} {np.mean(v):.1f}" for k, v in per.items()))
    return got


def report(work: Path, sets, criteria, log=print):
    lines = []
    worst = {c: -1e9 for c in criteria}
    for name in sets:
        d = work / name
        pri = json.loads((d / "priors.json").read_text())
        meta = json.loads((d / "meta.json").read_text())
        P = {c: picks(d, c) for c in criteria}
        for B in sorted({int(k.split("_")[0]) for k in pri}):
            keys = [k for k in pri if int(k.split("_")[0]) == B]
            seeds = sorted(int(k.split("_")[1]) for k in keys)
            mean = {c: 100 * np.mean([pri[k][c] for k in keys]) for c in pri[keys[0]]}
            best = max(mean, key=mean.get)
            cells = []
            for c in criteria:
                got = [P[c][B, int(k.split("_")[1])][0] for k in keys]
                m = 100 * np.mean([pri[k][g] for k, g in zip(keys, got)])
                worst[c] = max(worst[c], mean[best] - m)
                cells.append(f"{m:.1f} ({m - mean[best]:+.1f}; "
                             + ",".join(g[0] for g in got) + ")")
            lines.append(f"| {name} ({meta['dataset']}, {meta['spec']}) | {B} | "
                         f"{min(seeds)}–{max(seeds)} | " + " | ".join(
                             ("**%.1f**" if k == best else "%.1f") % mean[k]
                             for k in ("pixels", "self", "fine")) + " | "
                         + " | ".join(cells) + " |")
    head = ("| set | budget | seeds | pixels | self | fine | "
            + " | ".join(criteria) + " |\n|" + "---|" * (6 + len(criteria)))
    text = head + "\n" + "\n".join(lines) + "\n\nworst gap to the best candidate: " + \
        ", ".join(f"{c} {-worst[c]:+.1f}" for c in criteria)
    log(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set")
    ap.add_argument("--dataset")
    ap.add_argument("--checkpoint", help="backbone.pth, or random:SEED (random-init cnn4)")
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--per-class", default="1,4")
    ap.add_argument("--work", type=Path, default=Path("runs/choice_criteria"))
    ap.add_argument("--report", type=Path, default=None, help="WORK directory to report on")
    ap.add_argument("--sets", default="")
    ap.add_argument("--criteria", default="cross_view")
    ap.add_argument("--coverage", action="store_true",
                    help="with --report: also the classes each candidate's selection covers")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    if args.report:
        if args.coverage:
            for name in args.sets.split(","):
                coverage(args.report / name)
        report(args.report, args.sets.split(","), args.criteria.split(","))
        return 0
    from .feature_recipes import _seeds
    build(args.set, args.dataset, args.checkpoint, seeds=_seeds(args.seeds),
          per_class=[int(v) for v in args.per_class.split(",")], work=args.work,
          log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
