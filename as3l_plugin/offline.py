"""The offline stage on a feature file, as library functions: select, prior, evaluate-prior.

:func:`select_to_dir` (``as3l select``), :func:`prior_from_selection` (``as3l prior``) and
:func:`evaluate_prior` (``as3l evaluate-prior``); the CLI (:mod:`as3l_plugin.commands.offline`)
only parses arguments and prints. Only the standard library is imported at module level; each
function imports numpy / the samplers / the propagators when it runs, so ``as3l select --help``
stays fast.

Every file is written atomically; the sidecar JSON of the index (resp. the prior) is written
last and marks a complete output. If a function fails (bad input, full disk, read-only
directory, Ctrl-C), the files it created are removed and the files it replaced, old sidecar
included, are put back (:class:`Outputs`); if it is killed (SIGKILL), the index (prior) is left
without a sidecar, so it is treated as unfinished.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_SAMPLER = "as3l"
DEFAULT_PROPAGATOR = "seeded_kmeans"


# --------------------------------------------------------------------------- helpers
class Outputs:
    """Track the files a command writes; on error put the directory back as it was.

    Files that already exist are hard-linked (copied where links are not supported) to a
    hidden backup before they are replaced, and the old sidecar is moved aside before any
    write (so it never vouches for new data). :meth:`rollback` removes the files the command
    created and renames the backups back (a rename needs no free space, so it works on a
    full disk); :meth:`commit` drops the backups.
    """

    BACKUP = ".{name}.as3l-backup"

    def __init__(self):
        self.created: list[Path] = []
        self.backups: list[tuple[Path, Path]] = []
        self.made_dir: Path | None = None

    def ensure_dir(self, d: Path):
        if not d.exists():
            d.mkdir(parents=True)
            self.made_dir = d

    def _backup_path(self, p: Path) -> Path:
        return p.with_name(self.BACKUP.format(name=p.name))

    def will_write(self, p: Path):
        import os
        import shutil
        if not p.exists():
            self.created.append(p)
            return
        bak = self._backup_path(p)
        bak.unlink(missing_ok=True)  # a stale backup of a killed run
        try:
            os.link(p, bak)
        except OSError:
            shutil.copy2(p, bak)
        self.backups.append((p, bak))

    def retire(self, p: Path):
        """Move ``p`` (an old sidecar) out of the way now; restored by :meth:`rollback`."""
        import os
        if p.exists():
            bak = self._backup_path(p)
            os.replace(p, bak)
            self.backups.append((p, bak))
        else:
            self._backup_path(p).unlink(missing_ok=True)  # a stale backup of a killed run
            self.created.append(p)

    def rollback(self):
        import os
        for p in reversed(self.created):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        for p, bak in reversed(self.backups):
            try:
                if p.exists() and os.path.samefile(p, bak):
                    bak.unlink()  # never replaced (rename between hard links is a no-op)
                else:
                    os.replace(bak, p)
            except FileNotFoundError:
                pass
        if self.made_dir is not None:
            try:
                self.made_dir.rmdir()
            except OSError:
                pass

    def commit(self):
        for _, bak in self.backups:
            bak.unlink(missing_ok=True)


def check_budget(budget: int, n: int):
    from .errors import ParameterError

    if budget < 1:
        raise ParameterError(f"budget={budget} must be >= 1", field="--budget")
    if budget > n:
        raise ParameterError(f"budget={budget} > {n} samples in the feature file; lower "
                             "--budget", field="--budget")


def load_full_labels(path, n: int):
    """Load a dataset label array (int, shape (n,)) for simulation / oracle / evaluation."""
    import numpy as np

    from .errors import LabelsError
    from .io import load_npy

    y = load_npy(path, what="labels")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise LabelsError(f"expected a 1-D integer array of class ids, got {y.dtype} {y.shape}",
                          path=path)
    if y.shape[0] != n:
        raise LabelsError(f"has {y.shape[0]} labels but the features have {n} rows; they must "
                          "describe the same dataset in the same order", path=path)
    if y.size and y.min() < 0:
        raise LabelsError(f"has negative class ids (min {y.min()})", path=path)
    return y.astype(np.int64)


# --------------------------------------------------------------------------- select
def select_to_dir(features, budget, *, sampler=DEFAULT_SAMPLER, params=None, seed=0,
                  out_dir, labels=None, dataset=None, force=False, image_paths=None) -> dict:
    """Library form of ``as3l select``; returns the sidecar dict (with ``paths``).

    ``image_paths`` (sequence of str, one per feature row; folder data) fills the ``path``
    column of ``to_annotate.csv``.

    Writes ``lb_labels{B}_1_seed{S}_idx.npy`` (int64, the sampler's order, which for ``as3l``
    is its priority order), ``ulb_labels{B}_1_seed{S}_idx.npy`` (the sorted complement, as
    USB's own dump), ``to_annotate.csv`` and, last, the sidecar ``lb_..._idx.npy.json``.
    """
    import numpy as np

    from . import artifacts, io
    from .annotations import ANNOTATION_FILENAME, count_filled
    from .clustering import count_distinct_rows
    from .errors import InputError, OutputError
    from .metrics import class_coverage
    from .selection import get_sampler

    params = dict(params or {})
    out_dir = Path(out_dir)
    X = io.load_features(features)
    n = X.shape[0]
    check_budget(int(budget), n)
    y = load_full_labels(labels, n) if labels is not None else None
    if image_paths is not None and len(image_paths) != n:
        raise InputError(f"has {n} rows but the dataset has {len(image_paths)} images; the "
                         "features must be extracted from the same folder", path=features)
    csv_path = out_dir / ANNOTATION_FILENAME
    if csv_path.exists() and not force:
        filled = count_filled(csv_path)
        if filled:
            raise OutputError(f"already holds {filled} label(s); pass --force to overwrite it "
                              "or choose another --out", path=csv_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError("exists and is not a directory", path=out_dir)

    distinct = count_distinct_rows(X, at_least=int(budget))
    if distinct < int(budget):  # every sampler would have to label exact duplicates
        raise InputError(f"only {distinct} distinct rows, fewer than the {int(budget)} samples "
                         "(K = budget clusters) asked for; lower --budget or check why rows "
                         "repeat (a failed feature extraction?)", path=features,
                         field="features")
    smp = get_sampler(sampler, **params)
    try:
        idx = np.asarray(smp.select(X, int(budget), seed=int(seed)))
    except InputError as exc:  # a property of the feature file: name it
        if exc.path is not None:
            raise
        raise InputError(exc.message, path=features, field=exc.field) from None
    if idx.shape != (int(budget),) or np.unique(idx).size != idx.size \
            or idx.min() < 0 or idx.max() >= n:
        raise RuntimeError(f"sampler {sampler!r} returned an invalid selection {idx!r}")
    idx = idx.astype(np.int64)
    ulb = np.setdiff1d(np.arange(n, dtype=np.int64), idx)

    lb_path = out_dir / io.index_filename(budget, seed, prefix="lb")
    ulb_path = out_dir / io.index_filename(budget, seed, prefix="ulb")
    # the number of classes, when known (simulation labels, or the features' sidecar)
    feat_side = io.read_sidecar(features, required=False) or {}
    num_classes = int(y.max()) + 1 if y is not None else feat_side.get("num_classes")
    meta = artifacts.selection_meta(
        sampler=sampler, params=params, sampler_obj=smp, budget=budget, seed=seed, n=n,
        num_features=X.shape[1], num_classes=num_classes, dataset=dataset,
        features_file=features, features_sha256=io.sha256_array(X),
        ulb_index_file=ulb_path.name, labels_prefilled=y is not None, labels_file=labels,
        class_coverage=None if y is None else class_coverage(y[idx], int(y.max()) + 1),
        # a folder's file list: `as3l train` checks it
        dataset_files_sha256=feat_side.get("dataset_files_sha256"))

    outs = Outputs()
    try:
        outs.ensure_dir(out_dir)
        side = io.sidecar_path(lb_path)
        outs.retire(side)  # the old sidecar would vouch for files we are about to replace
        for p in (ulb_path, csv_path, lb_path):
            outs.will_write(p)
        artifacts.write_selection(out_dir, idx, meta, labels=None if y is None else y[idx],
                                  ulb=ulb, image_paths=image_paths)
    except BaseException:  # (SIGKILL leaves the index without its sidecar: unfinished)
        outs.rollback()
        raise
    outs.commit()
    meta["paths"] = {"lb_index": str(lb_path), "ulb_index": str(ulb_path),
                     "annotation": str(csv_path), "sidecar": str(io.sidecar_path(lb_path))}
    return meta


# --------------------------------------------------------------------------- prior
def prior_from_selection(features, *, index, labels_csv=None, oracle_labels=None,
                         num_classes=None, propagator=DEFAULT_PROPAGATOR, params=None, seed=0,
                         out, dataset=None, data_dir=None) -> dict:
    """Library form of ``as3l prior``; returns the prior's sidecar dict.

    Exactly one of ``labels_csv`` (the annotated ``to_annotate.csv``) and ``oracle_labels``
    (a ``.npy`` of all n true labels, for benchmarks) gives the labels of the selection.
    Class names in the CSV are those of ``dataset`` (default: the one recorded in the
    selection's sidecar), looked up only when a cell is not a class id.
    """
    import numpy as np

    from . import artifacts, io
    from .annotations import read_labels_csv
    from .errors import InputError, LabelsError, ParameterError, StaleInputError
    from .propagation import get_propagator
    from .validate import INDEX_SET_MESSAGES, check_index_set

    if (labels_csv is None) == (oracle_labels is None):
        raise ParameterError("give exactly one of --labels-csv and --oracle-labels",
                             field="--labels-csv")
    params = dict(params or {})
    prop = get_propagator(propagator, **params)  # fail fast on a bad name / parameter
    index = Path(index)
    out = Path(out)
    if out.suffix != ".npy":
        raise ParameterError(f"{out} should end in .npy", field="--out")
    sel = artifacts.read_artifact_sidecar(index)
    X = io.load_features(features)
    n = X.shape[0]
    if sel.get("n") != n or sel.get("features_sha256") != io.sha256_array(X):
        raise StaleInputError(
            f"the selection was made on other features (n={sel.get('n')}, sha256 "
            f"{str(sel.get('features_sha256'))[:12]}…) than {features} (n={n}, sha256 "
            f"{io.sha256_array(X)[:12]}…); use the same feature file or re-run `as3l select`",
            path=io.sidecar_path(index), field="features_sha256")
    idx = io.load_npy(index, what="index")
    bad_index = "expected unique int indices in [0, {n}), got {dtype} {shape}"
    idx = check_index_set(idx, n, allow_empty=False, error=InputError, path=index, field=None,
                          messages=dict.fromkeys(INDEX_SET_MESSAGES, bad_index))

    if num_classes is not None and num_classes < 1:
        raise ParameterError(f"={num_classes} must be >= 1", field="--num-classes")
    if oracle_labels is not None:
        y_all = load_full_labels(oracle_labels, n)
        if num_classes is None:
            num_classes = int(y_all.max()) + 1
        if y_all.max() >= num_classes:
            raise LabelsError(f"has class id {int(y_all.max())} >= --num-classes "
                              f"{num_classes}", path=oracle_labels)
        labels = y_all[idx]
        source = {"labels_source": "oracle", "labels_file": str(Path(oracle_labels).resolve()),
                  "labels_sha256": io.sha256_file(oracle_labels)}
    else:
        if num_classes is None:
            raise ParameterError("is required with --labels-csv (the number of classes of the "
                                 "dataset, also those nobody labeled)", field="--num-classes")
        dataset = dataset or sel.get("dataset")

        def names():
            if not dataset:
                return None
            from .datasets import class_names
            return class_names(dataset, num_classes, data_dir)
        labels = read_labels_csv(labels_csv, idx, num_classes, n_samples=n, class_names=names)
        source = {"labels_source": "csv", "labels_file": str(Path(labels_csv).resolve()),
                  "labels_sha256": io.sha256_file(labels_csv)}

    prior = prop.propagate(X, idx, labels, num_classes, seed=seed)
    meta = artifacts.prior_meta(
        n=n, num_classes=num_classes, idx=idx, labels=labels, propagator=propagator,
        params=params, prop_obj=prop, seed=seed, dataset=sel.get("dataset"), selection=sel,
        features_file=features, features_sha256=sel["features_sha256"], index_file=index,
        index_sha256=io.sha256_file(index), dataset_files_sha256=sel.get("dataset_files_sha256"),
        **source)
    outs = Outputs()
    try:
        side = io.sidecar_path(out)
        outs.retire(side)
        outs.will_write(out)
        artifacts.write_prior(out, prior, meta)
    except BaseException:  # (SIGKILL leaves the prior without its sidecar: unfinished)
        outs.rollback()
        raise
    outs.commit()
    return meta


# --------------------------------------------------------------------------- evaluate-prior
def evaluate_prior(prior_path, labels_path, exclude=None, n_bins=15) -> dict:
    """Library form of ``as3l evaluate-prior``: accuracy, class coverage, ECE."""
    import numpy as np

    from . import io
    from .metrics import check_prior, class_coverage, expected_calibration_error, \
        prior_accuracy

    P = io.load_npy(prior_path, what="prior")
    P = check_prior(P, path=prior_path)
    n, C = P.shape
    y = load_full_labels(labels_path, n)
    if y.max() >= C:
        from .errors import LabelsError
        raise LabelsError(f"has class id {int(y.max())} but the prior has {C} classes",
                          path=labels_path)
    ex_source = None
    ex = None
    if exclude is not None:
        ex = io.load_npy(exclude, what="index")
        ex_source = str(exclude)
    else:
        from .artifacts import read_artifact_sidecar
        side = read_artifact_sidecar(prior_path, required=False) or {}
        f = side.get("index_file")
        if f and Path(f).is_file() and io.sha256_file(f) == side.get("index_sha256"):
            ex = io.load_npy(f, what="index")
            ex_source = f + " (from the prior's sidecar)"
    res = {"prior": str(prior_path), "n": int(n), "num_classes": int(C),
           "accuracy": prior_accuracy(P, y, exclude=ex),
           "ece": expected_calibration_error(P, y, n_bins=n_bins, exclude=ex),
           "n_bins": int(n_bins), "excluded_from": ex_source,
           "n_evaluated": int(n - (0 if ex is None else np.unique(ex).size)),
           "class_coverage": None if ex is None else class_coverage(y[ex], C),
           "mean_confidence": float(P.max(axis=1).mean())}
    return res
