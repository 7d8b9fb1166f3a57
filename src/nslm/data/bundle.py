"""Corpora that ship with nslm, so that a first run works without network (`bundled/<corpus>/*.xz`).

Mikolov's PTB (three files, 1.4 MB as xz) is bundled. It is only used when no copy is in the data
directory and the download fails: each file is decompressed under a temporary name beside its destination,
its sha256 is checked against the canonical one, and only then is it renamed into place. The destination
is the data directory when it is writable, else a `corpora/` folder of the cache directory, since
`NSLM_DATA_DIR` may be a read-only shared mount.
"""

from __future__ import annotations

import logging
import lzma
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from nslm.errors import ChecksumError
from nslm.utils.atomic import atomic_path
from nslm.utils.hashing import sha256_file

log = logging.getLogger(__name__)
BUNDLE_DIR = Path(__file__).resolve().parent / "bundled"
_CHUNK = 1 << 20


def bundled_file(corpus: str, name: str) -> Path | None:
    """The compressed copy of `<corpus>/<name>` shipped with nslm, if there is one."""
    path = BUNDLE_DIR / corpus / f"{name}.xz"
    return path if path.is_file() else None


def unpack(source: Path, dest: Path, sha256: str) -> Path:
    """Decompress `source` into `dest`, published only once its sha256 is the expected one."""
    with atomic_path(dest) as tmp:
        with lzma.open(source) as packed, open(tmp, "wb") as out:
            shutil.copyfileobj(packed, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        actual = sha256_file(tmp)
        if actual != sha256:
            raise ChecksumError(
                f"the bundled {source} is damaged (sha256 {actual}, expected {sha256}); reinstall nslm, or "
                f"copy the canonical {dest.name} into {dest.parent}"
            )
    return dest


def unpack_corpus(corpus: str, files: Mapping[str, tuple[str, str]], directories: Sequence[Path]) -> dict[str, Path]:
    """{split: path} of the bundled corpus in the first of `directories` that can be written.

    `files` maps each split to (file name, sha256). Files already present in the chosen directory are
    kept; the missing ones are unpacked there. Raises FileNotFoundError if nslm has no bundled copy, and
    the last OSError if no directory is writable.
    """
    sources = {split: bundled_file(corpus, name) for split, (name, _) in files.items()}
    if any(source is None for source in sources.values()):
        raise FileNotFoundError(f"no bundled copy of {corpus} in {BUNDLE_DIR}")
    failure: OSError | None = None
    for directory in directories:
        paths = {split: Path(directory) / name for split, (name, _) in files.items()}
        try:
            for split, path in paths.items():
                if not path.is_file():
                    unpack(sources[split], path, files[split][1])
        except OSError as err:  # read-only, not a directory, disk full: try the next place
            log.info("cannot unpack the bundled %s into %s: %s", corpus, directory, err)
            failure = err
            continue
        log.info("unpacked the bundled %s into %s (sha256 checked)", corpus, directory)
        return paths
    raise failure or OSError(f"nowhere to unpack the bundled {corpus}")
