"""Tables and plots of ``as3l run`` and ``as3l bench``.

Everything here works on plain Python / NumPy values read from the runs' ``metrics.csv``
files, so the report can be rebuilt from disk at any time without re-training.

Conventions
-----------
- Accuracies are fractions in ``[0, 1]`` in files and percentages (one decimal) in tables.
- An accuracy curve is a pair ``(iterations int64 (m,), accuracy float64 (m,))`` sorted by
  iteration; a resumed training may log an evaluation twice, the last row wins.
- "Iterations to reach" an accuracy is the first *evaluated* iteration whose accuracy is
  ``>=`` the target; its resolution is the evaluation interval (``num_eval_iter``).
- Speed-up = iterations the reference ran / iterations to reach the reference's final
  accuracy (the paper's Table 2 convention).
- Plots use Matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

Curve = Tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------- curves
def read_metrics(path, *, algorithm: Optional[str] = None) -> Curve:
    """Read an accuracy curve from a USB-run ``metrics.csv``.

    Parameters
    ----------
    path : path-like
        CSV with at least the columns ``iteration`` and ``eval_acc`` (the plugin's train
        entry writes :data:`as3l_plugin.usb.hooks.METRICS_COLUMNS`).
    algorithm : str, optional
        Keep only rows whose ``algorithm`` column equals this.

    Returns
    -------
    iterations : int64 ndarray of shape (m,)
    accuracy : float64 ndarray of shape (m,)
        Sorted by iteration; for a repeated iteration the last row of the file wins.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("metrics file not found (did the training run?)", path=path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"iteration", "eval_acc"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"missing column(s) {sorted(missing)}; found {reader.fieldnames}",
                             path=path)
        by_it: Dict[int, float] = {}
        for row in reader:
            if algorithm is not None and row.get("algorithm", algorithm) != algorithm:
                continue
            try:
                by_it[int(float(row["iteration"]))] = float(row["eval_acc"])
            except (TypeError, ValueError) as exc:
                raise InputError(f"bad row {row} ({exc})", path=path) from exc
    its = np.array(sorted(by_it), dtype=np.int64)
    acc = np.array([by_it[i] for i in its], dtype=np.float64)
    return its, acc


def final_accuracy(curve: Curve) -> float:
    """Accuracy at the last evaluated iteration (NaN for an empty curve)."""
    return float(curve[1][-1]) if len(curve[1]) else float("nan")


def best_accuracy(curve: Curve) -> Tuple[float, int]:
    """``(best accuracy, first iteration reaching it)``; ``(nan, -1)`` for an empty curve."""
    its, acc = curve
    if not len(acc):
        return float("nan"), -1
    j = int(np.argmax(acc))
    return float(acc[j]), int(its[j])


def accuracy_at(curve: Curve, iteration: int) -> float:
    """Accuracy at the first evaluated iteration ``>= iteration``; NaN if none."""
    its, acc = curve
    hit = np.flatnonzero(its >= iteration)
    return float(acc[hit[0]]) if hit.size else float("nan")


def mean_accuracy_from(curve: Curve, iteration: int) -> float:
    """Mean accuracy of the evaluations at iterations ``>= iteration`` (the end of a run, less
    one evaluation's noise); NaN if none."""
    its, acc = curve
    tail = acc[its >= iteration]
    return float(np.mean(tail)) if tail.size else float("nan")


def iterations_to_reach(curve: Curve, target: float) -> Optional[int]:
    """First evaluated iteration whose accuracy is ``>= target``; None if never reached."""
    its, acc = curve
    if not np.isfinite(target):
        return None
    hit = np.flatnonzero(acc >= target - 1e-12)
    return int(its[hit[0]]) if hit.size else None


def speedup(reference_iterations: int, reached_at: Optional[int]) -> float:
    """``reference_iterations / reached_at``; NaN when the target was not reached."""
    if reached_at is None or reached_at <= 0:
        return float("nan")
    return float(reference_iterations) / float(reached_at)


# --------------------------------------------------------------------------- formatting
def pct(x, digits: int = 1) -> str:
    """A fraction as a percentage string; ``–`` for None/NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{100.0 * float(x):.{digits}f}"


def mean_std(values: Iterable[float], *, scale: float = 1.0, digits: int = 1,
             suffix: str = "", signed: bool = False) -> str:
    """``"mean ± std"`` over the finite values (sample std, ddof=1; ``± 0`` for one value);
    ``signed``: the mean with its sign (``+1.2``, ``-0.3``), for differences.

    Non-finite values (a target never reached, a missing cell) are left out and counted:
    the string ends with ``(k/n)`` when only ``k`` of ``n`` values are finite.
    """
    vals = [float(v) for v in values if v is not None]
    fin = [v * scale for v in vals if math.isfinite(v)]
    if not fin:
        return "–" if not vals else f"– (0/{len(vals)})"
    m = float(np.mean(fin))
    s = float(np.std(fin, ddof=1)) if len(fin) > 1 else 0.0
    out = f"{m:{'+' if signed else ''}.{digits}f}{suffix} ± {s:.{digits}f}"
    if len(fin) < len(vals):
        out += f" ({len(fin)}/{len(vals)})"
    return out


def markdown_table(header: Sequence[str], rows: Iterable[Sequence], *,
                   align: Optional[str] = None) -> str:
    """A GitHub-flavoured Markdown table. ``align``: one of ``l r c`` per column."""
    header = [str(h) for h in header]
    rows = [[("–" if c is None else str(c)) for c in r] for r in rows]
    align = align or ("l" + "r" * (len(header) - 1))
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def format_seconds(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s"


# --------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_accuracy_curves(curves: Mapping[str, Sequence[Curve]], path, *,
                         title: str = "test accuracy vs iteration",
                         hline: Optional[Tuple[float, str]] = None) -> Path:
    """Plot mean test accuracy vs iteration per label, with a ±std band over runs.

    Parameters
    ----------
    curves : mapping label -> list of curves
        Several curves under one label (seeds) are averaged on the iterations they share.
    hline : (accuracy, text), optional
        A horizontal reference line, e.g. the baseline's final accuracy.
    """
    from .io import atomic_write_bytes
    import io as _io
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, runs in curves.items():
        runs = [c for c in runs if len(c[0])]
        if not runs:
            continue
        common = runs[0][0]
        for its, _ in runs[1:]:
            common = np.intersect1d(common, its)
        if not common.size:  # no shared grid: draw each run
            for its, acc in runs:
                ax.plot(its, 100 * acc, label=label, lw=1.2)
            continue
        stack = np.stack([acc[np.searchsorted(its, common)] for its, acc in runs]) * 100
        m = stack.mean(0)
        line, = ax.plot(common, m, label=f"{label}" + (f" (n={len(runs)})" if len(runs) > 1 else ""),
                        lw=1.5)
        if len(runs) > 1:
            s = stack.std(0, ddof=1)
            ax.fill_between(common, m - s, m + s, color=line.get_color(), alpha=0.15, lw=0)
    if hline is not None and math.isfinite(hline[0]):
        ax.axhline(100 * hline[0], color="grey", ls="--", lw=1)
        ax.annotate(hline[1], (ax.get_xlim()[0], 100 * hline[0]), fontsize=8, color="grey",
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_per_class(values: Mapping[str, Sequence[float]], path, *,
                   title: str = "prior accuracy per class (unlabeled samples)",
                   ylabel: str = "accuracy (%)", class_names: Optional[Sequence[str]] = None
                   ) -> Path:
    """Grouped bar chart: one bar group per class, one bar per series (fractions → %)."""
    from .io import atomic_write_bytes
    import io as _io
    plt = _pyplot()
    series = list(values.items())
    C = max(len(v) for _, v in series)
    x = np.arange(C)
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * C + 2), 3.8), dpi=110)
    for j, (label, v) in enumerate(series):
        v = np.asarray(v, dtype=np.float64) * 100
        ax.bar(x + (j - (len(series) - 1) / 2) * width, np.nan_to_num(v), width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(class_names if class_names is not None else [str(i) for i in x])
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, num_classes: int,
                       exclude: Optional[np.ndarray] = None) -> np.ndarray:
    """Accuracy of ``pred`` within each true class → float64 ``(num_classes,)`` (NaN if empty)."""
    pred = np.asarray(pred)
    y = np.asarray(y)
    keep = np.ones(len(y), dtype=bool)
    if exclude is not None and len(exclude):
        keep[np.asarray(exclude, dtype=np.int64)] = False
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        m = keep & (y == c)
        if m.any():
            out[c] = float((pred[m] == c).mean())
    return out


def final_confusion(log_path, num_classes: int) -> Optional[np.ndarray]:
    """The last confusion matrix a USB run logged (``<save_dir>/<save_name>/log.txt``).

    USB's ``evaluate`` logs ``confusion matrix:`` and then
    ``np.array_str(confusion_matrix(y_true, y_pred, normalize='true'))`` at every evaluation,
    so row ``c`` is the distribution of predictions for true class ``c`` and the diagonal is
    the per-class test accuracy (recall) at that evaluation.

    Returns
    -------
    float64 ``(num_classes, num_classes)``, or None when the log is missing, holds no matrix,
    or its last one is not ``num_classes²`` numbers (NumPy summarises arrays of more than
    1,000 entries with ``...``, i.e. above 31 classes).
    """
    import re
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return None
    start = text.rfind("confusion matrix:")
    if start < 0:
        return None
    block = []
    for line in text[start:].splitlines()[1:]:
        if re.match(r"\[\d{4}-\d\d-\d\d ", line) \
                or not re.fullmatch(r"[\s\[\]\d.eE+\-]+", line):
            break                       # the next log record, or not part of the array
        block.append(line)
        if line.rstrip().endswith("]]"):
            break
    if "..." in "".join(block):
        return None
    vals = re.findall(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?", " ".join(block))
    if len(vals) != num_classes * num_classes:
        return None
    return np.asarray(vals, dtype=np.float64).reshape(num_classes, num_classes)


def write_curves_csv(path, curves: Mapping[str, Curve]) -> Path:
    """Long-format ``iteration,algorithm,eval_acc`` CSV of several runs (one file per job)."""
    from .io import atomic_write_csv
    rows: List[list] = []
    for name, (its, acc) in curves.items():
        rows += [[int(i), name, f"{a:.6f}"] for i, a in zip(its, acc)]
    return atomic_write_csv(path, ["iteration", "algorithm", "eval_acc"], rows)
