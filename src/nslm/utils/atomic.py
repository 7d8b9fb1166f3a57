"""Write files and directories so that a crash, a kill or a full disk never leaves a broken one behind.

Everything is first written under a temporary name in the destination's own directory (same file system,
so the final `os.replace`/`os.rename` is atomic), then published in one step. A reader therefore sees the
previous good version or the new complete one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it replaces `dest`, on any error it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{dest.name}{TMP_MARK}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; give it a normal file's mode
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(dest: str | Path, text: str) -> None:
    with atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_json(dest: str | Path, payload: Any) -> None:
    atomic_write_text(dest, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_directory(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes `dest` on success.

    If another process published `dest` first (two sweep jobs or DDP ranks preparing the same cache),
    its result is kept and ours is discarded: both were built from the same inputs.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{dest.name}{TMP_MARK}", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only; shared caches need the usual mode
    try:
        yield tmp
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(directory: str | Path, older_than_s: float = 24 * 3600) -> None:
    """Delete leftovers of killed writers (SIGKILL skips the cleanup above) once they are clearly stale.

    Never fails: an entry that vanished meanwhile, a dangling symlink, or one that cannot be removed is
    skipped. Several jobs may clean the same directory at once (sweep jobs, DDP ranks): each entry is
    first renamed to a name of the cleaner's own, which only one of them can do, and only then deleted.
    """
    try:
        entries = list(os.scandir(directory))
    except OSError:  # missing or unreadable: nothing of ours to clean
        return
    cutoff = time.time() - older_than_s
    for entry in entries:
        if TMP_MARK not in entry.name:
            continue
        try:
            stale = entry.stat(follow_symlinks=False).st_mtime < cutoff  # a link's own age, not its target's
        except OSError:  # removed by another cleaner since the listing
            continue
        if stale:
            _remove_claimed(Path(entry.path))


def _remove_claimed(path: Path) -> None:
    # the new name keeps TMP_MARK and the entry's mtime: if this cleaner is killed too, a later one finishes
    claimed = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(path, claimed)
    except OSError:  # another cleaner claimed it first, or it is not ours to move
        return
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(claimed).st_mode):  # a real directory; a symlink to one is only unlinked
            shutil.rmtree(claimed, ignore_errors=True)
        else:
            claimed.unlink()
