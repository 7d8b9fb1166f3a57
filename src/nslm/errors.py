"""User-facing errors: one line that says what was wrong and how to fix it."""


class NslmError(RuntimeError):
    """An error caused by input or environment, reported as one line without a traceback."""


class CorpusNotFoundError(NslmError):
    pass


class ChecksumError(NslmError):
    pass


class UnsafeArchiveError(NslmError):
    pass
