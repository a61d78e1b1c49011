"""The annotation file: which samples to label, and the labels a person gave them.

Format (``to_annotate.csv``, written by ``as3l select`` / ``as3l annotate``, read by
``as3l prior`` and the pipeline)::

    index,label,path
    1234,,
    87,Coat,
    5,skip,
    ...

- ``index``: row number of the sample in the dataset / feature file (0-based), one line per
  selected sample, in the sampler's order.
- ``label``: the class, as its integer id in ``[0, num_classes)`` or as its class name
  (``Coat``; an exact name wins over an id, then a case-insensitive one); empty until a
  person fills it in; ``skip`` marks a sample the annotator was unsure of (it still needs a
  label before ``as3l prior``). With ``as3l select --labels y.npy`` (simulation) it is
  pre-filled with the true class ids.
- ``path``: the image's path relative to the dataset folder (folder data; empty for array
  datasets). When the dataset's paths are known, a non-empty cell must match the sample.
- The header must contain ``index`` and ``label`` (``path`` is optional, so files of older
  versions still read); other columns (``note``) are ignored; blank lines are skipped; a
  UTF-8 BOM (Excel) is accepted.

:func:`read_labels_csv` checks that the file labels *exactly* the selected samples;
:func:`read_annotations` reads a partly labeled file (the annotation page); both raise
:class:`~as3l_plugin.errors.LabelsError` naming the file, line and field.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .errors import LabelsError

__all__ = ["ANNOTATION_FILENAME", "HEADER", "SKIP", "UNLABELED", "SKIPPED", "annotation_rows",
           "read_labels_csv", "read_annotations", "read_label_table", "count_filled", "parse_label"]

ANNOTATION_FILENAME = "to_annotate.csv"
HEADER = ("index", "label", "path")
REQUIRED = ("index", "label")
#: the ``label`` cell of a sample marked "skip / unsure"
SKIP = "skip"
#: codes of :func:`read_annotations` for a sample with no label yet / marked skip
UNLABELED, SKIPPED = -1, -2


def annotation_rows(indices, labels=None, *, paths=None, class_names=None):
    """Rows for :func:`as3l_plugin.io.atomic_write_csv` (header :data:`HEADER`).

    Parameters
    ----------
    indices : array-like of int, shape (m,)
    labels : array-like of int, shape (m,), optional
        Class ids; :data:`UNLABELED` (-1) writes an empty cell, :data:`SKIPPED` (-2)
        :data:`SKIP`. None: all empty.
    paths : sequence of str, shape (m,), optional
        Relative image paths of the ``m`` samples (folder data).
    class_names : sequence of str, optional
        Write class names instead of ids.
    """
    indices = np.asarray(indices, dtype=np.int64)
    labels = np.full(indices.size, UNLABELED) if labels is None \
        else np.asarray(labels, dtype=np.int64)
    paths = [""] * indices.size if paths is None else [str(p) for p in paths]

    def cell(c):
        if c == UNLABELED:
            return ""
        if c == SKIPPED:
            return SKIP
        return class_names[c] if class_names is not None else int(c)
    return [(int(i), cell(int(c)), p) for i, c, p in zip(indices, labels, paths)]


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
    """Column positions ``(index, label, path or None)``."""
    if not rows:
        raise LabelsError("is empty; expected a header line 'index,label'", path=path)
    lineno, head = rows[0]
    names = [h.strip().lower() for h in head]
    if len(names) == 1 and ";" in names[0]:
        raise LabelsError(f"header {head[0]!r} uses ';' as separator; save with commas "
                          "(CSV, comma-separated)", path=f"{path}:{lineno}", field="header")
    missing = [h for h in REQUIRED if h not in names]
    if missing:
        raise LabelsError(f"header {','.join(head)!r} lacks column(s) {', '.join(missing)}; "
                          "expected 'index,label'", path=f"{path}:{lineno}", field="header")
    return names.index("index"), names.index("label"), \
        (names.index("path") if "path" in names else None)


def count_filled(path) -> int:
    """Number of data lines whose ``label`` cell is non-empty (0 for an unreadable file)."""
    try:
        path, rows = _open_rows(path)
        _, lcol, _ = _header(path, rows)
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


def parse_label(text, num_classes, class_names=None, *, where=None, sample=None) -> int:
    """One ``label`` cell → class id, :data:`UNLABELED` (empty) or :data:`SKIPPED`.

    ``class_names`` is a sequence of names (position = id) or a zero-argument callable
    returning one (called only for a cell that is not an id). Raises :class:`LabelsError`
    for an unknown name or an id out of range.
    """
    s = text.strip()
    if not s:
        return UNLABELED
    names = class_names
    if names is not None and not callable(names) and s in names:  # an exact name wins
        return list(names).index(s)
    try:
        lab = int(s)
    except ValueError:
        lab = None
    of = "" if sample is None else f" for sample {sample}"
    if lab is not None:
        if not 0 <= lab < num_classes:
            raise LabelsError(f"class id {lab}{of} is out of range [0, {num_classes}); check "
                              "--num-classes", path=where, field="label")
        return lab
    if s.lower() == SKIP:
        return SKIPPED
    if callable(names):
        names = names()
    names = list(names or ())
    if s in names:
        return names.index(s)
    folded = [i for i, n in enumerate(names) if n.lower() == s.lower()]
    if len(folded) == 1:
        return folded[0]
    if not names:
        raise LabelsError(f"{s!r}{of} is not a class id in [0, {num_classes}) and no class "
                          "names are known (pass --dataset to name them)", path=where,
                          field="label")
    shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
    raise LabelsError(f"{s!r}{of} is not a class name ({shown}) nor an id in "
                      f"[0, {num_classes})", path=where, field="label")


def read_annotations(path, selected_idx, num_classes, *, class_names=None, n_samples=None,
                     paths=None, complete=False) -> np.ndarray:
    """Read the labels of ``selected_idx`` from an annotation CSV, partly filled or not.

    Parameters
    ----------
    path : str or Path
    selected_idx : array-like of int, shape (m,)
        The selection the CSV labels; each index at most once (exactly once if
        ``complete``).
    num_classes : int
        Class ids must be in ``[0, num_classes)``.
    class_names : sequence of str or callable, optional
        Names accepted in the ``label`` column (see :func:`parse_label`).
    n_samples : int, optional
        Dataset size; indices outside ``[0, n_samples)`` are reported as such.
    paths : sequence of str, shape (n_samples,), optional
        The dataset's relative image paths; a non-empty ``path`` cell must match.
    complete : bool
        Every selected sample must have a line with a class (no empty cell, no ``skip``).

    Returns
    -------
    labels : ndarray of int64, shape (m,)
        Aligned with ``selected_idx`` (the CSV's line order does not matter): class ids,
        :data:`UNLABELED` (-1, empty cell or no line) or :data:`SKIPPED` (-2).

    Raises
    ------
    LabelsError
        Missing file or header column, a non-integer index, an unknown class name, a class
        id out of range, an index out of range or not selected, a duplicate index, a path
        that does not match; with ``complete`` also an empty / ``skip`` cell or a selected
        index with no line. The message starts with ``file:line: field:``.
    """
    selected = np.asarray(selected_idx, dtype=np.int64)
    position = {int(i): p for p, i in enumerate(selected)}
    path, rows = _open_rows(path)
    icol, lcol, pcol = _header(path, rows)
    labels = np.full(selected.size, UNLABELED, dtype=np.int64)
    seen_at: dict[int, int] = {}
    for lineno, row in rows[1:]:
        if not any(c.strip() for c in row):
            continue
        where = f"{path}:{lineno}"
        if len(row) <= icol:
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
        if pcol is not None and paths is not None and len(row) > pcol and row[pcol].strip() \
                and row[pcol].strip() != str(paths[idx]):
            raise LabelsError(f"{row[pcol].strip()!r} is not the path of sample {idx} "
                              f"({paths[idx]!r}); the CSV belongs to another dataset or "
                              "order", path=where, field="path")
        cell = row[lcol] if len(row) > lcol else ""
        if complete and len(row) <= lcol:
            raise LabelsError(f"has {len(row)} column(s), expected at least "
                              f"{max(icol, lcol) + 1} (index,label)", path=where, field="label")
        lab = parse_label(cell, num_classes, class_names, where=where, sample=idx)
        if complete and lab == UNLABELED:
            raise LabelsError(f"is empty; fill in the class id for sample {idx}", path=where,
                              field="label")
        if complete and lab == SKIPPED:
            raise LabelsError(f"sample {idx} is marked {SKIP!r} (unsure); give it a class "
                              "(your best guess) before computing the prior", path=where,
                              field="label")
        labels[position[idx]] = lab
    if complete:
        missing = selected[labels == UNLABELED]
        if missing.size:
            raise LabelsError(f"{missing.size} selected sample(s) have no line (first: "
                              f"{missing[:5].tolist()}); every selected index needs a label",
                              path=path, field="index")
    return labels


def read_label_table(path, num_classes, *, class_names=None):
    """A complete label file with no selection to check against (the pipeline's own
    ``labels.csv``): ``(indices, labels)``, both int64 ``(m,)``, in the file's order."""
    path, rows = _open_rows(path)
    icol, _, _ = _header(path, rows)
    idx = [_parse_int(r[icol] if len(r) > icol else "", "sample index", f"{path}:{ln}", "index")
           for ln, r in rows[1:] if any(c.strip() for c in r)]
    idx = np.asarray(idx, dtype=np.int64)
    return idx, read_labels_csv(path, idx, num_classes, class_names=class_names)


def read_labels_csv(path, selected_idx, num_classes, *, n_samples=None, class_names=None,
                    paths=None) -> np.ndarray:
    """Read the human labels for ``selected_idx``; every selected sample needs a class.

    :func:`read_annotations` with ``complete=True``: returns int64 class ids, shape (m,),
    aligned with ``selected_idx``; raises :class:`LabelsError` (``file:line: field:``) for
    anything missing or malformed.
    """
    return read_annotations(path, selected_idx, num_classes, class_names=class_names,
                            n_samples=n_samples, paths=paths, complete=True)
