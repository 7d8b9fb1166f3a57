"""User-facing errors: one line that says what was wrong and how to fix it."""

from __future__ import annotations

import sys
from typing import NoReturn


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


def exit_on_user_error(program: str, err: Exception) -> NoReturn:
    """A user error (an NslmError, possibly wrapped by Hydra) ends `program` with one line on stderr and
    exit status 2; anything else is a bug and is raised again with its traceback."""
    cause = user_error(err)
    if cause is None:
        raise err
    print(f"{program}: error: {cause}", file=sys.stderr)
    raise SystemExit(2) from None
