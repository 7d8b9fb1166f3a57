"""Word-level vocabulary: ids sorted by descending train frequency, counts kept for the samplers.

Every line of text ends in `<eos>`; words outside the vocabulary map to `<unk>`, whose count absorbs the
counts of the words that `max_size`/`min_freq` dropped, so `counts` is exactly the unigram distribution of
the encoded training tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from nslm.errors import ConfigError
from nslm.utils.atomic import atomic_write_text

EOS = "<eos>"
UNK = "<unk>"


#: characters read at a time: a line longer than this (a whole corpus on one line) comes in pieces
PIECE_CHARS = 1 << 18


def read_lines(path: str | Path, stats: dict[str, int] | None = None) -> Iterator[str]:
    """Stream a text file line by line; undecodable bytes become U+FFFD and are counted in `stats`."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if stats is not None and "\ufffd" in line:
                stats["replaced_chars"] = stats.get("replaced_chars", 0) + line.count("\ufffd")
            yield line


def read_words(
    path: str | Path,
    stats: dict[str, int] | None = None,
    piece_chars: int = PIECE_CHARS,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[tuple[list[str], bool]]:
    """Stream a text file as (words, line ended) pieces of at most ~`piece_chars` characters.

    Same words and line ends as `read_lines` + `str.split`, but memory stays bounded on a file whose
    text is one huge line: a long line is read `piece_chars` at a time and cut at white space, never
    inside a word (the partial word at a piece's end is carried over to the next piece). `on_read` is
    told how many characters each read brought (for a progress bar).
    """
    carry, line_open = "", False
    with open(path, encoding="utf-8", errors="replace") as handle:
        while chunk := handle.readline(piece_chars):
            if on_read is not None:
                on_read(len(chunk))
            if stats is not None and "\ufffd" in chunk:
                stats["replaced_chars"] = stats.get("replaced_chars", 0) + chunk.count("\ufffd")
            # readline(n) returns less than n characters without a newline only at the end of the file
            ended = chunk.endswith("\n") or len(chunk) < piece_chars
            text = carry + chunk if carry else chunk
            words = text.split()
            carry = words.pop() if not ended and words and not text[-1].isspace() else ""
            line_open = not ended
            if words or ended:
                yield words, ended
    if line_open:  # the file ended exactly at a piece boundary, inside its last line
        yield ([carry] if carry else []), True


class Vocabulary:
    def __init__(self, itos: list[str], counts: list[int]) -> None:
        if len(itos) != len(counts):
            raise ConfigError("itos and counts must have the same length")
        self.itos = list(itos)
        self.counts = [int(c) for c in counts]
        self.stoi = {word: index for index, word in enumerate(self.itos)}
        if EOS not in self.stoi or UNK not in self.stoi:
            raise ConfigError(f"a vocabulary must contain {EOS} and {UNK}")
        self.eos_id = self.stoi[EOS]
        self.unk_id = self.stoi[UNK]

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def fingerprint(self) -> str:
        """Identifies the id -> word mapping; checkpoints store it to refuse a mismatched corpus."""
        return hashlib.sha256("\n".join(self.itos).encode()).hexdigest()[:16]

    @classmethod
    def from_lines(cls, lines: Iterable[str], max_size: int | None = None, min_freq: int = 1) -> Vocabulary:
        return cls.from_pieces(((line.split(), True) for line in lines), max_size, min_freq)

    @classmethod
    def from_pieces(
        cls, pieces: Iterable[tuple[list[str], bool]], max_size: int | None = None, min_freq: int = 1
    ) -> Vocabulary:
        """From `read_words`' (words, line ended) pieces: one `<eos>` per line end."""
        counter: Counter[str] = Counter()
        for words, ended in pieces:
            counter.update(words)
            if ended:
                counter[EOS] += 1
        return cls.from_counter(counter, max_size=max_size, min_freq=min_freq)

    @classmethod
    def from_counter(cls, counter: Counter[str], max_size: int | None = None, min_freq: int = 1) -> Vocabulary:
        if max_size is not None and max_size < 2:
            raise ConfigError(f"data.max_vocab_size must be at least 2 (for {EOS} and {UNK}), got {max_size}")
        if min_freq < 1:
            raise ConfigError(f"data.min_freq must be at least 1, got {min_freq}")
        first_seen = {word: order for order, word in enumerate(counter)}  # Counter keeps insertion order
        by_frequency = sorted(counter.items(), key=lambda item: -item[1])  # stable: ties keep first-seen order
        budget = (max_size - 2) if max_size is not None else len(by_frequency)
        kept: dict[str, int] = {}
        dropped = 0
        for word, count in by_frequency:
            if word in (EOS, UNK):
                continue
            if count >= min_freq and len(kept) < budget:
                kept[word] = count
            else:
                dropped += count
        kept[EOS] = counter.get(EOS, 0)
        kept[UNK] = counter.get(UNK, 0) + dropped
        never_seen = len(first_seen)
        ordered = sorted(kept.items(), key=lambda item: (-item[1], first_seen.get(item[0], never_seen)))
        return cls([word for word, _ in ordered], [count for _, count in ordered])

    def encode_words(self, words: list[str]) -> list[int]:
        get, unk = self.stoi.get, self.unk_id
        return [get(word, unk) for word in words]

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps({"itos": self.itos, "counts": self.counts}))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(payload["itos"], payload["counts"])
