"""User-facing errors: one line that says what was wrong and how to fix it."""


class NslmError(RuntimeError):
    """An error caused by input or environment, reported as one line without a traceback."""


class CorpusNotFoundError(NslmError):
    pass


class ChecksumError(NslmError):
    pass


class UnsafeArchiveError(NslmError):
    pass


class ConfigError(NslmError, ValueError):
    """A setting out of range (sizes, counts, options that cannot go together)."""


def user_error(err: BaseException) -> NslmError | None:
    """The NslmError behind `err`, also when Hydra's instantiate wrapped it; None for real bugs."""
    while err is not None:
        if isinstance(err, NslmError):
            return err
        err = err.__cause__ or err.__context__
    return None
