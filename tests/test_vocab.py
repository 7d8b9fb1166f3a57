from __future__ import annotations

import random
from collections import Counter

import pytest

from nslm.data.vocab import EOS, UNK, Vocabulary, read_lines, read_words


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


def _pieces_to_lines(pieces) -> list[list[str]]:
    lines, current = [], []
    for words, ended in pieces:
        current += words
        if ended:
            lines.append(current)
            current = []
    assert current == []  # every piece belongs to a line that ends
    return lines


def test_long_lines_stream_in_pieces_with_the_same_words_and_line_ends(tmp_path):
    rng = random.Random(0)
    alphabet = ["a", "bb", "ccc", "é", " ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\u3000", "\x0c"]
    texts = ["", "\n", "one", "one two\n", "x" * 40 + " y", " lead and trail \n", "no newline at the end"]
    texts += ["".join(rng.choices(alphabet, k=rng.randint(1, 120))) for _ in range(60)]
    for index, text in enumerate(texts):
        path = tmp_path / f"{index}.txt"
        path.write_bytes(text.encode("utf-8"))
        expected = [line.split() for line in read_lines(path)]  # the line-at-a-time reading
        for piece_chars in (1, 2, 3, 5, 8, 13, 1 << 18):
            pieces = list(read_words(path, piece_chars=piece_chars))
            assert _pieces_to_lines(pieces) == expected, (text, piece_chars)
        counted = Vocabulary.from_pieces(read_words(path, piece_chars=3))
        assert counted.itos == Vocabulary.from_lines(read_lines(path)).itos
