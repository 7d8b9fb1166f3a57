from __future__ import annotations

from collections import Counter

import pytest

from nslm.data.vocab import EOS, UNK, Vocabulary


def test_ids_sorted_by_frequency_ties_in_first_seen_order():
    vocab = Vocabulary.from_lines(["b a c", "c d a", "a"])
    # counts: a 3, eos 3, c 2, b 1, d 1; a seen before eos; b before d
    assert vocab.itos[:5] == ["a", EOS, "c", "b", "d"]
    assert vocab.counts[:5] == [3, 3, 2, 1, 1]
    assert vocab.itos[-1] == UNK and vocab.counts[-1] == 0


def test_every_line_ends_in_eos_and_unknown_words_map_to_unk():
    vocab = Vocabulary.from_lines(["x y", "", "y"])
    assert vocab.counts[vocab.eos_id] == 3  # the empty line still ends a sentence
    assert vocab.encode_words(["y", "zzz"]) == [vocab.stoi["y"], vocab.unk_id]


def test_max_size_and_min_freq_fold_dropped_counts_into_unk():
    lines = ["a a a a b b b c c d", "e"]
    vocab = Vocabulary.from_lines(lines, max_size=4)  # a, b + eos + unk
    assert set(vocab.itos) == {"a", "b", EOS, UNK}
    assert vocab.counts[vocab.unk_id] == 2 + 1 + 1  # c, c, d, e
    assert sum(vocab.counts) == 10 + 1 + 2  # every encoded train token is counted once
    by_freq = Vocabulary.from_lines(lines, min_freq=2)
    assert set(by_freq.itos) == {"a", "b", "c", EOS, UNK}
    assert by_freq.counts == sorted(by_freq.counts, reverse=True)


def test_text_unk_keeps_its_own_count():
    vocab = Vocabulary.from_counter(Counter({"a": 5, UNK: 2, EOS: 1, "rare": 1}), min_freq=2)
    assert vocab.counts[vocab.unk_id] == 3


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_vocab_size"):
        Vocabulary.from_lines(["a"], max_size=1)
    with pytest.raises(ValueError, match="min_freq"):
        Vocabulary.from_lines(["a"], min_freq=0)


def test_save_load_roundtrip(tmp_path):
    vocab = Vocabulary.from_lines(["héllo wörld", "wörld"])
    vocab.save(tmp_path / "v.json")
    loaded = Vocabulary.load(tmp_path / "v.json")
    assert loaded.itos == vocab.itos and loaded.counts == vocab.counts
    assert loaded.fingerprint == vocab.fingerprint
