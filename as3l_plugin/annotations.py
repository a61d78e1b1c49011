"""The annotation file: which samples to label, and the labels a person gave them.

Format (``to_annotate.csv``, written by ``as3l select``, read by ``as3l prior``)::

    index,label
    1234,
    87,
    ...

- ``index``: row number of the sample in the dataset / feature file (0-based), one line per
  selected sample, in the sampler's order.
- ``label``: the integer class id in ``[0, num_classes)``; empty until a person fills it in.
  With ``as3l select --labels y.npy`` (simulation) it is pre-filled with the true labels.
- Extra columns (e.g. a ``note`` or ``path`` column added by the annotator) are ignored; the
  header must contain ``index`` and ``label``; blank lines are skipped; a UTF-8 BOM (Excel)
  is accepted.

:func:`read_labels_csv` checks that the file labels *exactly* the selected samples and
raises :class:`~as3l_plugin.errors.LabelsError` naming the file, line and field otherwise.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .errors import LabelsError

__all__ = ["ANNOTATION_FILENAME", "annotation_rows", "read_labels_csv", "count_filled"]

ANNOTATION_FILENAME = "to_annotate.csv"
HEADER = ("index", "label")


def annotation_rows(indices, labels=None):
    """Rows for :func:`as3l_plugin.io.atomic_write_csv` (header :data:`HEADER`)."""
    indices = np.asarray(indices, dtype=np.int64)
    if labels is None:
        return [(int(i), "") for i in indices]
    labels = np.asarray(labels, dtype=np.int64)
    return [(int(i), int(c)) for i, c in zip(indices, labels)]


def _open_rows(path):
    path = Path(path)
    if not path.is_file():
        raise LabelsError("labels CSV not found", path=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelsError(f"not UTF-8 text ({exc.reason}); save the sheet as CSV UTF-8",
                          path=path) from exc
    reader = csv.reader(text.splitlines())
    rows = [(lineno, row) for lineno, row in enumerate(reader, start=1)]
    return path, rows


def _header(path, rows):
    if not rows:
        raise LabelsError("is empty; expected a header line 'index,label'", path=path)
    lineno, head = rows[0]
    names = [h.strip().lower() for h in head]
    if len(names) == 1 and ";" in names[0]:
        raise LabelsError(f"header {head[0]!r} uses ';' as separator; save with commas "
                          "(CSV, comma-separated)", path=f"{path}:{lineno}", field="header")
    missing = [h for h in HEADER if h not in names]
    if missing:
        raise LabelsError(f"header {','.join(head)!r} lacks column(s) {', '.join(missing)}; "
                          "expected 'index,label'", path=f"{path}:{lineno}", field="header")
    return names.index("index"), names.index("label")


def count_filled(path) -> int:
    """Number of data lines whose ``label`` cell is non-empty (0 for an unreadable file)."""
    try:
        path, rows = _open_rows(path)
        _, lcol = _header(path, rows)
    except LabelsError:
        return 0
    return sum(1 for _, r in rows[1:] if len(r) > lcol and r[lcol].strip())


def _parse_int(text, what, where, field):
    s = text.strip()
    if not s:
        raise LabelsError(f"is empty; fill in the {what}", path=where, field=field)
    try:
        return int(s)
    except ValueError:
        raise LabelsError(f"{s!r} is not an integer {what}", path=where, field=field) from None


def read_labels_csv(path, selected_idx, num_classes, *, n_samples=None) -> np.ndarray:
    """Read the human labels for ``selected_idx`` from an annotation CSV.

    Parameters
    ----------
    path : str or Path
    selected_idx : array-like of int, shape (m,)
        The selection the CSV must label, every index exactly once.
    num_classes : int
        Class ids must be in ``[0, num_classes)``.
    n_samples : int, optional
        Dataset size; indices outside ``[0, n_samples)`` are reported as such.

    Returns
    -------
    labels : ndarray of int64, shape (m,)
        Aligned with ``selected_idx`` (the CSV's line order does not matter).

    Raises
    ------
    LabelsError
        Missing file or header column, a non-integer or empty cell, a class id out of range,
        an index out of range or not selected, a duplicate index, or a selected index with no
        line. The message starts with ``file:line: field:``.
    """
    selected = np.asarray(selected_idx, dtype=np.int64)
    position = {int(i): p for p, i in enumerate(selected)}
    path, rows = _open_rows(path)
    icol, lcol = _header(path, rows)
    labels = np.full(selected.size, -1, dtype=np.int64)
    seen_at: dict[int, int] = {}
    for lineno, row in rows[1:]:
        if not any(c.strip() for c in row):
            continue
        where = f"{path}:{lineno}"
        if len(row) <= max(icol, lcol):
            raise LabelsError(f"has {len(row)} column(s), expected at least "
                              f"{max(icol, lcol) + 1} (index,label)", path=where, field="label")
        idx = _parse_int(row[icol], "sample index", where, "index")
        if n_samples is not None and not 0 <= idx < n_samples:
            raise LabelsError(f"{idx} is out of range [0, {n_samples})", path=where,
                              field="index")
        if idx not in position:
            raise LabelsError(f"{idx} is not one of the {selected.size} selected samples; "
                              "label only the rows of the to_annotate.csv written by "
                              "`as3l select`", path=where, field="index")
        if idx in seen_at:
            raise LabelsError(f"{idx} appears twice (lines {seen_at[idx]} and {lineno}); keep "
                              "one line per sample", path=where, field="index")
        seen_at[idx] = lineno
        lab = _parse_int(row[lcol], f"class id for sample {idx}", where, "label")
        if not 0 <= lab < num_classes:
            raise LabelsError(f"class id {lab} for sample {idx} is out of range "
                              f"[0, {num_classes}); check --num-classes", path=where,
                              field="label")
        labels[position[idx]] = lab
    missing = selected[labels < 0]
    if missing.size:
        raise LabelsError(f"{missing.size} selected sample(s) have no line (first: "
                          f"{missing[:5].tolist()}); every selected index needs a label",
                          path=path, field="index")
    return labels
