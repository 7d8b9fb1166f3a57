from __future__ import annotations

import multiprocessing as mp
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nslm.data import token_cache
from nslm.data.corpora import PennTreebank
from nslm.data.token_cache import prepare_token_cache
from nslm.errors import NslmError
from nslm.utils import atomic
from nslm.utils.hashing import sha256_file


def test_ptb_is_canonical_and_encodes_to_known_sizes(ptb_dir, tmp_path):
    files = PennTreebank(ptb_dir.parent).split_files()
    for split, spec in PennTreebank.FILES.items():
        assert sha256_file(files[split]) == spec.sha256
    cache = prepare_token_cache("ptb", files, tmp_path)
    assert len(cache.vocab) == 10000
    assert cache.meta["dtype"] == "uint16"
    # Mikolov's PTB with <eos> per line: the token counts every PTB paper uses
    assert {s: len(cache.tokens(s)) for s in ("train", "valid", "test")} == {
        "train": 929589,
        "valid": 73760,
        "test": 82430,
    }
    assert cache.meta["splits"]["train"]["unk"] == cache.vocab.counts[cache.vocab.unk_id]


def test_dtype_switches_to_uint32_for_large_vocabularies():
    assert token_cache.token_dtype(65536) == np.uint16
    assert token_cache.token_dtype(65537) == np.uint32


def test_roundtrip_decodes_to_the_text(tiny_corpus, tmp_path):
    cache = prepare_token_cache("tiny", tiny_corpus, tmp_path)
    ids = cache.tokens("valid")
    words = [cache.vocab.itos[i] for i in ids]
    expected = []
    for line in tiny_corpus["valid"].read_text().splitlines():
        expected += [w if w in cache.vocab.stoi else "<unk>" for w in line.split()] + ["<eos>"]
    assert words == expected


def test_cache_is_reused_and_rebuilt_when_a_source_changes(tiny_corpus, tmp_path):
    first = prepare_token_cache("tiny", tiny_corpus, tmp_path)
    again = prepare_token_cache("tiny", tiny_corpus, tmp_path)
    assert again.directory == first.directory
    with open(tiny_corpus["test"], "a") as handle:
        handle.write("w1 w2 brand_new_word\n")
    changed = prepare_token_cache("tiny", tiny_corpus, tmp_path)
    assert changed.directory != first.directory
    assert len(changed.tokens("test")) == len(first.tokens("test")) + 4
    other_settings = prepare_token_cache("tiny", tiny_corpus, tmp_path, max_vocab_size=10)
    assert other_settings.directory not in (first.directory, changed.directory)
    assert len(other_settings.vocab) == 10


def test_interrupted_preparation_leaves_no_cache_and_the_next_run_builds_it(tiny_corpus, tmp_path, monkeypatch):
    real_encode = token_cache.encode_file
    calls = []

    def dying_encode(source, vocab, target, dtype):
        calls.append(source)
        if len(calls) == 2:  # train written, valid half-way: the process "dies"
            with open(target, "wb") as handle:
                handle.write(b"\x01\x00" * 7)
            raise KeyboardInterrupt
        return real_encode(source, vocab, target, dtype)

    monkeypatch.setattr(token_cache, "encode_file", dying_encode)
    with pytest.raises(KeyboardInterrupt):
        prepare_token_cache("tiny", tiny_corpus, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("tiny")] == []  # nothing half-written
    monkeypatch.setattr(token_cache, "encode_file", real_encode)
    cache = prepare_token_cache("tiny", tiny_corpus, tmp_path)
    assert len(cache.tokens("valid")) > 7


def _prepare_in_child(args):
    corpus, cache_dir = args
    return str(prepare_token_cache("tiny", corpus, cache_dir).directory)


def test_concurrent_preparations_agree_on_one_complete_cache(tiny_corpus, tmp_path):
    with mp.get_context("spawn").Pool(3) as pool:
        directories = pool.map(_prepare_in_child, [(tiny_corpus, tmp_path)] * 3)
    assert len(set(directories)) == 1
    leftovers = [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    assert leftovers == []
    cache = prepare_token_cache("tiny", tiny_corpus, tmp_path)
    assert len(cache.tokens("train")) > 0


def test_empty_split_is_a_clear_error(tiny_corpus, tmp_path):
    tiny_corpus["valid"].write_text("  \n\n \t\n")
    with pytest.raises(NslmError, match=r"valid split .* has no words"):
        prepare_token_cache("tiny", tiny_corpus, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == []


def test_invalid_utf8_is_replaced_and_counted(tiny_corpus, tmp_path):
    with open(tiny_corpus["train"], "ab") as handle:
        handle.write(b"caf\xe9 ok\n")
    cache = prepare_token_cache("tiny", tiny_corpus, tmp_path)
    assert cache.meta["splits"]["train"]["replaced_chars"] == 1
    assert "caf\ufffd" in cache.vocab.stoi


def _age(path, seconds: float = 2 * 24 * 3600) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old), follow_symlinks=False)


def test_stale_temporaries_of_any_kind_never_break_a_cache_build(tiny_corpus, tmp_path):
    cache_dir, outside = tmp_path / "cache", tmp_path / "outside"
    cache_dir.mkdir()
    (outside / "keep").mkdir(parents=True)
    stale = {
        "dangling": ("tiny-x.tmp-dangling", lambda p: p.symlink_to(tmp_path / "gone")),
        "file": ("hashes.json.tmp-file", lambda p: p.write_text("half")),
        "dir": ("tiny-y.tmp-dir", lambda p: (p.mkdir(), (p / "train.bin").write_bytes(b"\0" * 8))),
        "link to a dir": ("tiny-z.tmp-link", lambda p: p.symlink_to(outside)),
    }
    for name, make in stale.values():
        make(cache_dir / name)
        _age(cache_dir / name)
    fresh = cache_dir / "tiny-w.tmp-live"  # a writer at work right now: left alone
    fresh.mkdir()
    cache = prepare_token_cache("tiny", tiny_corpus, cache_dir)
    assert len(cache.tokens("train")) > 0
    assert sorted(p.name for p in cache_dir.iterdir() if ".tmp-" in p.name) == [fresh.name]
    assert (outside / "keep").is_dir()  # a link is removed, never what it points to


def test_cleaning_tolerates_entries_that_vanish_and_concurrent_cleaners(tmp_path, monkeypatch):
    names = [f"c{i}.tmp-{i}" for i in range(200)]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
        _age(tmp_path / name)
    real_scandir = os.scandir

    def listing_then_vanish(path):  # another cleaner removes an entry between our listing and our stat
        monkeypatch.setattr(os, "scandir", real_scandir)  # only this listing (shutil.rmtree lists too)
        entries = list(real_scandir(path))
        (tmp_path / names[0] / "f").unlink()
        (tmp_path / names[0]).rmdir()
        return iter(entries)

    monkeypatch.setattr(os, "scandir", listing_then_vanish)
    atomic.remove_stale_temporaries(tmp_path, older_than_s=3600)
    assert list(tmp_path.iterdir()) == []

    for name in names:
        (tmp_path / name).mkdir()
        _age(tmp_path / name)
    with ThreadPoolExecutor(4) as pool:  # four cleaners on the same 200 entries: no error, nothing left
        list(pool.map(lambda _: atomic.remove_stale_temporaries(tmp_path, older_than_s=3600), range(4)))
    assert list(tmp_path.iterdir()) == []
