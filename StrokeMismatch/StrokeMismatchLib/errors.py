"""Error types raised by StrokeMismatchLib.

Every problem with the user's input is reported as a :class:`StrokeMismatchError`
(a ``ValueError``) whose message says what is wrong and what to do about it.
"""


class StrokeMismatchError(ValueError):
    """Base class of all errors that StrokeMismatchLib raises on purpose."""


class InputDataError(StrokeMismatchError):
    """The input images, times or parameters cannot be analysed as given."""


class InputFileError(StrokeMismatchError):
    """An input file or folder is missing, unreadable, corrupt or of the wrong kind."""


class OutputError(StrokeMismatchError):
    """Results cannot be written where the user asked."""


class AnalysisCancelled(StrokeMismatchError):
    """The user cancelled a running analysis (progress callback returned False)."""
