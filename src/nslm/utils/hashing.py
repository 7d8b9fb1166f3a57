"""Content hashes of input files, memoised by (path, size, mtime) so large corpora are hashed once."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from nslm.utils.atomic import atomic_write_json

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: str | Path, memo_file: str | Path) -> str:
    """sha256 of `path`, reusing the value stored in `memo_file` while size and mtime are unchanged."""
    path = Path(path).resolve()
    stat = path.stat()
    signature = f"{stat.st_size}:{stat.st_mtime_ns}"
    memo_file = Path(memo_file)
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(str(path))
    if entry and entry.get("signature") == signature:
        return entry["sha256"]
    value = sha256_file(path)
    memo[str(path)] = {"signature": signature, "sha256": value}
    with contextlib.suppress(OSError):  # a read-only cache dir only costs re-hashing next time
        atomic_write_json(memo_file, memo)
    return value


def hash_settings(**settings: object) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
