"""Each split encoded once into a flat memory-mapped token file, keyed by its inputs and settings.

    <cache_dir>/<corpus>-<key>/vocab.json, meta.json, train.bin, valid.bin, test.bin

The key hashes the content of the three source files and the vocabulary settings, so editing a source file
or changing `max_vocab_size` builds a new cache and never reuses a stale one. Encoding streams the text in
fixed-size chunks: peak memory is the vocabulary plus one chunk, whatever the corpus size. The whole
directory is built under a temporary name and renamed when complete (see `nslm.utils.atomic`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from nslm.data.vocab import EOS, Vocabulary, read_words
from nslm.errors import NslmError
from nslm.utils.atomic import atomic_directory, atomic_write_json, remove_stale_temporaries
from nslm.utils.hashing import cached_sha256, hash_settings
from nslm.utils.progress import progress_bar

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
FLUSH_TOKENS = 1 << 16  # ~2 MB of Python ints per flush, whatever the corpus size


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def encode_file(source: Path, vocab: Vocabulary, target: Path, dtype: np.dtype) -> dict[str, int]:
    """Stream `source` into `target` as ids; returns counts of tokens, `<unk>`s and replaced characters."""
    stats = {"tokens": 0, "unk": 0, "replaced_chars": 0, "lines": 0}
    get, unk, eos = vocab.stoi.get, vocab.unk_id, vocab.eos_id
    buffer: list[int] = []
    read = [0]  # characters since the last flush (~bytes for mostly-ASCII text): the bar moves per flush

    def count(chars: int) -> None:
        read[0] += chars

    with (
        open(target, "wb") as out,
        progress_bar(f"encoding {source.name}", source.stat().st_size, unit="bytes") as advance,
    ):
        for words, line_ended in read_words(source, stats, on_read=count):  # bounded pieces, even of one line
            buffer.extend(map(get, words, repeat(unk)))
            if line_ended:
                buffer.append(eos)
                stats["lines"] += 1
            if len(buffer) >= FLUSH_TOKENS:
                _flush(buffer, out, dtype, unk, stats)
                advance(read[0])
                read[0] = 0
        _flush(buffer, out, dtype, unk, stats)
        advance(read[0])
    return stats


def _flush(buffer: list[int], out, dtype: np.dtype, unk: int, stats: dict[str, int]) -> None:
    ids = np.fromiter(buffer, dtype=dtype, count=len(buffer))
    stats["tokens"] += len(ids)
    stats["unk"] += int(np.count_nonzero(ids == unk))
    ids.tofile(out)
    buffer.clear()


@dataclass
class TokenCache:
    """A prepared corpus: its vocabulary and one read-only memmap of token ids per split."""

    directory: Path
    vocab: Vocabulary
    meta: dict

    def tokens(self, split: str) -> np.memmap:
        dtype = np.dtype(self.meta["dtype"])
        return np.memmap(self.directory / f"{split}.bin", dtype=dtype, mode="r")

    @classmethod
    def load(cls, directory: Path) -> TokenCache:
        meta = json.loads((directory / "meta.json").read_text())
        return cls(directory, Vocabulary.load(directory / "vocab.json"), meta)


def check_readable(sources: dict[str, Path]) -> None:
    """Fail early, in one line, on a split that cannot be read (permissions, a directory, a dead mount)."""
    for split, path in sources.items():
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as err:
            raise NslmError(
                f"cannot read the {split} split {path}: {err.strerror or err}; check that it is a readable file"
            ) from None


def cache_key(sources: dict[str, Path], memo_file: Path, **settings: object) -> str:
    hashes = {split: cached_sha256(path, memo_file) for split, path in sources.items()}
    return hash_settings(sources=hashes, format=FORMAT_VERSION, **settings)[:16]


def publish_cache(
    cache_dir: str | Path, corpus_name: str, key: str, build: Callable[[Path], tuple[Vocabulary, dict]]
) -> TokenCache:
    """The one way a token cache comes to exist, for text corpora and generated ones alike.

    `<cache_dir>/<corpus>-<key>/` holds `vocab.json`, one `<split>.bin` of token ids per split (dtype
    `token_dtype(V)`), any files of the corpus' own (the synthetic oracle) and `meta.json`, written last.
    `build(staging)` writes the splits (and extras) into a staging directory and returns the vocabulary and
    the corpus' own meta fields; the directory is renamed into place in one step, so an interrupted or
    concurrent build (two sweep jobs, several DDP ranks) never leaves a broken cache, and the first
    complete one wins. Stale staging directories of killed builds are cleaned up first.
    """
    cache_dir = Path(cache_dir)
    directory = cache_dir / f"{corpus_name}-{key}"
    if (directory / "meta.json").is_file():
        return TokenCache.load(directory)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(cache_dir)
    log.info("preparing %s into %s", corpus_name, directory)
    with atomic_directory(directory) as staging:
        vocab, corpus_meta = build(staging)
        vocab.save(staging / "vocab.json")
        meta = {
            "corpus": corpus_name,
            "key": key,
            "format": FORMAT_VERSION,
            "dtype": token_dtype(len(vocab)).name,
            "vocab_size": len(vocab),
            "eos": EOS,
            **corpus_meta,
        }
        atomic_write_json(staging / "meta.json", meta)
    return TokenCache.load(directory)


def prepare_token_cache(
    corpus_name: str,
    sources: dict[str, Path],
    cache_dir: str | Path,
    max_vocab_size: int | None = None,
    min_freq: int = 1,
) -> TokenCache:
    """Return the cache for these text files and settings, encoding it first if it does not exist yet."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    check_readable(sources)
    key = cache_key(sources, cache_dir / "hashes.json", max_vocab_size=max_vocab_size, min_freq=min_freq)

    def encode(staging: Path) -> tuple[Vocabulary, dict]:
        vocab = Vocabulary.from_pieces(read_words(sources["train"]), max_vocab_size, min_freq)
        dtype = token_dtype(len(vocab))
        splits = {}
        for split in SPLITS:
            stats = encode_file(sources[split], vocab, staging / f"{split}.bin", dtype)
            if stats["tokens"] == stats["lines"]:
                raise NslmError(
                    f"the {split} split ({sources[split]}) has no words (empty or white space only); "
                    "give it a file with text"
                )
            if stats["replaced_chars"]:
                log.warning(
                    "%s: %d undecodable bytes replaced by U+FFFD (the file is not valid UTF-8)",
                    sources[split],
                    stats["replaced_chars"],
                )
            splits[split] = {"source": str(sources[split]), **stats}
        return vocab, {"max_vocab_size": max_vocab_size, "min_freq": min_freq, "splits": splits}

    return publish_cache(cache_dir, corpus_name, key, encode)
