"""Checksummed downloads and archive extraction that refuses paths escaping the target directory."""

from __future__ import annotations

import logging
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from nslm.errors import ChecksumError, UnsafeArchiveError
from nslm.utils.atomic import atomic_directory, atomic_path
from nslm.utils.hashing import sha256_file
from nslm.utils.progress import progress_bar

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def download(urls: Sequence[str], dest: Path, sha256: str, timeout_s: float = 60.0) -> Path:
    """Fetch the first reachable URL into `dest`, verifying its sha256 before it gets its final name.

    Raises `ConnectionError` if no mirror answers, `ChecksumError` (bad file removed) on a mismatch.
    """
    failures = []
    for url in urls:
        try:
            with atomic_path(dest) as tmp:
                _fetch(url, tmp, timeout_s)
                actual = sha256_file(tmp)
                if actual != sha256:
                    raise ChecksumError(
                        f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; "
                        "the file was removed, retry or fetch it by hand into the data directory"
                    )
            return dest
        except (urllib.error.URLError, OSError) as err:
            failures.append(f"{url}: {err}")
    raise ConnectionError("; ".join(failures))


def _fetch(url: str, target: Path, timeout_s: float) -> None:
    log.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with progress_bar(f"downloading {url.rsplit('/', 1)[-1]}", total, unit="bytes") as advance:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                advance(len(chunk))


def _check_member(root: Path, name: str) -> Path:
    resolved = (root / name).resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside {root}; refusing it")
    return resolved


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract a .zip or .tar(.gz) into `target` atomically, refusing absolute paths, `..` and links out."""
    target = Path(target)
    with atomic_directory(target) as staging:
        root = staging.resolve()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    _check_member(root, member)
                zf.extractall(root)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    _check_member(root, member.name)
                    if member.issym() or member.islnk():
                        _check_member(root, str(Path(member.name).parent / member.linkname))
                tf.extractall(root, filter="data")
    return target
