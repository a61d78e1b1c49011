"""The project's exception types.

Every error a user can cause by passing bad input is an :class:`AS3LError`. The CLI turns
them into a one-line message (``as3l: error: <message>``) and exit code 2; ``--debug``
shows the traceback. Messages name the file and/or field, the value seen, what was expected,
and the fix where there is one.

All types subclass :class:`ValueError` so library users catching ``ValueError`` (the
scikit-learn habit) still catch them.
"""

from __future__ import annotations


class AS3LError(ValueError):
    """Base class: a user-facing error with a one-line message.

    Parameters
    ----------
    message : str
        What is wrong and how to fix it.
    path : str or os.PathLike, optional
        The file the problem is in; prefixed to the message.
    field : str, optional
        The parameter, column or config key at fault; prefixed to the message.
    """

    def __init__(self, message: str, *, path=None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        self.message = message
        prefix = []
        if self.path is not None:
            prefix.append(self.path)
        if field is not None:
            prefix.append(field)
        text = (": ".join(prefix) + ": " + message) if prefix else message
        super().__init__(text)


class InputError(AS3LError):
    """A data file or array is malformed: wrong shape, dtype, NaN, truncated, not .npy."""


class ParameterError(AS3LError):
    """A hyper-parameter or CLI argument is out of range (budget, K, seed...)."""


class LabelsError(AS3LError):
    """An annotation CSV / label array is inconsistent with the selection."""


class PriorError(AS3LError):
    """A prior matrix does not fit the dataset (length, classes, negative, rows not summing to 1)."""


class ContractError(AS3LError):
    """A sampler or propagator returned a result that breaks its documented contract (wrong
    shape, negative or non-finite values): a bug in that code (e.g. a registered plug-in),
    not in the user's input."""


class TrainingError(AS3LError):
    """Training went wrong on valid inputs (e.g. the loss became NaN or inf); the message
    names the setting to change."""


class StaleInputError(AS3LError):
    """A sidecar says the file was built from other inputs (checksum / size mismatch)."""


class ConfigError(AS3LError):
    """A YAML config key is missing or invalid."""


class DatasetError(AS3LError):
    """A dataset is missing on disk or unknown; the message says how to install it."""


class OutputError(AS3LError):
    """An output location cannot be written (missing/read-only directory, full disk)."""


class ConfigWarning(UserWarning):
    """A config key that nothing reads (a warning unless ``--strict``); the CLI prints it as
    one line ``warning: <file>: <key>: ...``."""
