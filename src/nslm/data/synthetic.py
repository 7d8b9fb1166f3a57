"""`data=synthetic`: text from a known random source, so the best achievable perplexity is known exactly.

The source is a class-based bigram (a first-order Markov chain whose rows are shared by word classes):

    P(w_t | w_{t-1}) = P(w_t | class(w_{t-1}))

- V - 1 words with Zipfian weights (word i ~ 1/(i+1)^s; the heaviest is `<eos>`, as in PTB); one more
  id, `<unk>`, never occurs, so the vocabulary has exactly `vocab_size` entries.
- Every word is the context of one of `num_classes` classes (uniformly at random).
- Every class can be followed by a sparse set of words: each word belongs to `classes_per_word` classes'
  successor sets (frequent words to more, so that no single one dominates a class), with its Zipf weight
  times Gamma noise. A class row therefore has ~ V * classes_per_word / num_classes non-zeros.

Ids are then numbered by the source's expected frequency (its stationary word distribution), most
frequent first, as a real corpus' vocabulary is: samplers that assume frequency-sorted ids (log-uniform)
see what they would see on PTB. (The Zipf weights alone do not give that order: the successor sets and
their Gamma noise reshuffle it; Spearman 0.63 between weight rank and frequency rank at V = 10k.)

An LSTM can represent this source exactly (it needs the previous word's class and C successor
distributions), so `ppl / oracle` measures how far training got, not a softmax bottleneck. The oracle of
a split is exp(mean -log P(w_t | class(w_{t-1}))) over all its tokens (the first given `<eos>`), written
to `oracle.json` beside the token files together with the source's entropy rate.

Generation runs many chains in parallel, each starting after `<eos>` and run for a fixed number of steps,
then on until it finishes the sentence it is in (its next `<eos>`). Their concatenation is one exact sample
path of the source: every chain starts in the state the previous one ended in, and a sentence is never
dropped for being long (cutting each chain at its last `<eos>` instead would, biasing the corpus towards
short sentences). Chunks go straight to disk, so memory does not grow with the corpus.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nslm.data.corpora import Corpus
from nslm.data.token_cache import TokenCache, publish_cache, token_dtype
from nslm.data.vocab import EOS, UNK, Vocabulary
from nslm.errors import ConfigError
from nslm.utils.atomic import atomic_write_json
from nslm.utils.hashing import hash_settings
from nslm.utils.progress import progress_bar

log = logging.getLogger(__name__)
SOURCE_VERSION = 1  # how a source is built from its settings
GENERATOR_VERSION = 3  # how splits are sampled from it (part of the cache key); 3: frequency-sorted ids
MAX_SENTENCE = 1_000_000  # a chain that has not emitted <eos> after this many extra steps is an error
CHAINS = 4096  # parallel chains per generation round
HEAD_SHARE = 0.25  # a word takes at most ~this share of any class it follows


@dataclass(frozen=True)
class SourceSettings:
    vocab_size: int = 10_000
    num_classes: int = 64
    classes_per_word: int = 2
    zipf_exponent: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.vocab_size < 3:
            raise ConfigError(f"data.vocab_size must be at least 3 (<eos>, <unk> and a word), got {self.vocab_size}")
        if not 1 <= self.num_classes <= self.vocab_size - 1:
            raise ConfigError(f"data.num_classes must be in 1..{self.vocab_size - 1}, got {self.num_classes}")
        if not 1 <= self.classes_per_word <= self.num_classes:
            raise ConfigError(
                f"data.classes_per_word must be in 1..num_classes={self.num_classes}, got {self.classes_per_word}"
            )
        if self.zipf_exponent <= 0:
            raise ConfigError(f"data.zipf_exponent must be positive, got {self.zipf_exponent}")


class MarkovSource:
    """The class-based bigram source: sample token paths and score them exactly."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        words, classes = settings.vocab_size - 1, settings.num_classes
        rng = np.random.default_rng([settings.seed, SOURCE_VERSION])
        zipf = 1.0 / np.arange(1, words + 1, dtype=np.float64) ** settings.zipf_exponent
        zipf /= zipf.sum()
        self.num_words = words
        self.class_of = rng.integers(0, classes, size=words).astype(np.int32)

        # successor sets: (class, word) pairs; a frequent word follows more classes (at most all of them)
        per_word = np.clip(np.ceil(zipf * classes / HEAD_SHARE), settings.classes_per_word, classes).astype(int)
        head = np.flatnonzero(per_word > settings.classes_per_word)
        pair_class = [rng.integers(0, classes, size=(words, settings.classes_per_word)).ravel()]
        pair_word = [np.repeat(np.arange(words), settings.classes_per_word)]
        for word in head:  # few words (those above HEAD_SHARE / classes in frequency)
            pair_class.append(rng.choice(classes, size=per_word[word], replace=False))
            pair_word.append(np.full(per_word[word], word))
        keys = np.concatenate(pair_class).astype(np.int64) * words + np.concatenate(pair_word)
        keys = np.unique(keys)  # sorted by class, then word; a pair drawn twice counts once
        pair_class, pair_word = keys // words, keys % words
        weight = zipf[pair_word] / per_word[pair_word] * rng.gamma(2.0, 0.5, size=len(keys))
        class_total = np.bincount(pair_class, weights=weight, minlength=classes)
        if np.any(class_total == 0):
            raise ConfigError("a word class has no successors; use fewer data.num_classes for this vocab_size")
        prob = weight / class_total[pair_class]

        # number the words by expected frequency, most frequent first (see the module doc)
        frequency = np.bincount(
            pair_word,
            weights=self._class_stationary(pair_class, self.class_of[pair_word], prob)[pair_class] * prob,
            minlength=words,
        )
        order = np.argsort(-frequency, kind="stable")  # old ids, most frequent first
        new_id = np.empty(words, dtype=np.int64)
        new_id[order] = np.arange(words)
        self.eos_id = int(new_id[0])  # the weight-0 word is <eos>
        self.class_of = self.class_of[order]
        keys = pair_class * words + new_id[pair_word]
        by_key = np.argsort(keys)  # sorted by class, then word
        keys, pair_class, prob = keys[by_key], pair_class[by_key], prob[by_key]
        pair_word = keys % words
        self.expected_frequency = frequency[order]

        self.keys = keys
        self.log_prob = np.log(prob)
        self.successor = pair_word.astype(np.int32)
        # each class's cumulative distribution shifted by its index, so that one searchsorted of
        # class + U(0, 1) samples the next word of every chain at once
        cumulative = np.cumsum(prob)
        ends = np.cumsum(np.bincount(pair_class, minlength=classes)) - 1
        within = cumulative - np.concatenate([[0.0], cumulative[ends[:-1]]])[pair_class]
        within[ends] = 1.0
        self.cdf = pair_class + within
        self._class_prob, self._class_counts = prob, np.bincount(pair_class, minlength=classes)

    def sample_into(self, path: Path, num_tokens: int, rng: np.random.Generator, dtype: np.dtype, label: str) -> None:
        """Write one exact sample path of `num_tokens` tokens (starting after `<eos>`) to `path`."""
        steps = min(2048, 16 + math.ceil(num_tokens / CHAINS))  # bounded memory per round
        written = 0
        with open(path, "wb") as out, progress_bar(f"generating {label}", num_tokens, unit="tokens") as advance:
            while written < num_tokens:
                for chain in self._run_chains(steps, rng):  # each starts after and ends with an <eos>
                    piece = chain[: num_tokens - written]
                    piece.astype(dtype).tofile(out)
                    written += len(piece)
                    advance(len(piece))
                    if written >= num_tokens:
                        break

    def _class_stationary(self, pair_class: np.ndarray, next_class: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """Stationary distribution of the class of the previous word (power iteration on C x C)."""
        classes = self.settings.num_classes
        transition = np.zeros((classes, classes))
        np.add.at(transition, (pair_class, next_class), prob)
        stationary = np.full(classes, 1.0 / classes)
        for _ in range(10_000):
            updated = stationary @ transition
            if np.abs(updated - stationary).max() < 1e-13:
                return updated
            stationary = updated
        return stationary

    def _step(self, state: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        position = self.class_of[state] + rng.random(len(state))
        return self.successor[np.searchsorted(self.cdf, position, side="right")]

    def _run_chains(self, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
        """CHAINS paths: `steps` steps from <eos>, then each on to the end of its sentence."""
        state = np.full(CHAINS, self.eos_id, dtype=np.int32)  # every chain starts right after an <eos>
        paths = np.empty((steps, CHAINS), dtype=np.int32)
        for step in range(steps):
            state = paths[step] = self._step(state, rng)
        tails: list[list[int]] = [[] for _ in range(CHAINS)]
        open_chains = np.flatnonzero(state != self.eos_id)
        for _ in range(MAX_SENTENCE):
            if not len(open_chains):
                break
            state[open_chains] = following = self._step(state[open_chains], rng)
            for chain, token in zip(open_chains.tolist(), following.tolist(), strict=True):
                tails[chain].append(token)
            open_chains = open_chains[following != self.eos_id]
        else:
            raise ConfigError("the source hardly ever emits <eos>; use a larger data.zipf_exponent")
        return [np.concatenate([paths[:, chain], np.asarray(tails[chain], dtype=np.int32)]) for chain in range(CHAINS)]

    def token_log_probs(self, tokens: np.ndarray, previous: int | None = None) -> np.ndarray:
        """log P(tokens[t] | tokens[t-1]) under the source, tokens[-1] taken as `previous` (default <eos>)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        context = np.concatenate([[self.eos_id if previous is None else previous], tokens[:-1]])
        keys = self.class_of[context].astype(np.int64) * self.num_words + tokens
        index = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        if np.any(self.keys[index] != keys):
            raise ValueError("these tokens contain a transition the source cannot emit")
        return self.log_prob[index]

    def total_log_prob(self, tokens: np.ndarray, chunk: int = 1 << 22) -> float:
        """log P(tokens) for a split that starts after `<eos>`, scored in chunks (memmaps of any size)."""
        total, previous = 0.0, self.eos_id
        for start in range(0, len(tokens), chunk):
            piece = np.asarray(tokens[start : start + chunk])
            total += float(self.token_log_probs(piece, previous).sum())
            previous = int(piece[-1])
        return total

    def entropy_rate(self) -> float:
        """Nats per token of the stationary chain: sum over classes pi(c) H(P(. | c))."""
        classes = self.settings.num_classes
        pair_class = np.repeat(np.arange(classes), self._class_counts)
        stationary = self._class_stationary(pair_class, self.class_of[self.successor], self._class_prob)
        entropy = -np.bincount(pair_class, weights=self._class_prob * np.log(self._class_prob), minlength=classes)
        return float(stationary @ entropy)


def prepare_synthetic_corpus(cache_dir: str | Path, settings: SourceSettings, split_tokens: dict[str, int]) -> Path:
    """The directory of this source's token cache (built once): vocab.json, meta.json, *.bin, oracle.json."""
    for split, count in split_tokens.items():
        if count < 2:
            raise ConfigError(f"data.{split}_tokens must be at least 2, got {count}")
    key = hash_settings(source=asdict(settings), tokens=split_tokens, version=GENERATOR_VERSION)[:16]
    oracle = {}

    def generate(staging: Path) -> tuple[Vocabulary, dict]:
        source = MarkovSource(settings)
        dtype = token_dtype(settings.vocab_size)
        oracle.update(entropy_rate_nats=source.entropy_rate(), splits={})
        oracle["ppl_entropy_rate"] = math.exp(oracle["entropy_rate_nats"])
        for offset, (split, count) in enumerate(split_tokens.items()):
            rng = np.random.default_rng([settings.seed, GENERATOR_VERSION, 1 + offset])
            source.sample_into(staging / f"{split}.bin", count, rng, dtype, f"{split} split")
            tokens = np.memmap(staging / f"{split}.bin", dtype=dtype, mode="r")
            nll = -source.total_log_prob(tokens)
            oracle["splits"][split] = {"tokens": len(tokens), "ppl": math.exp(nll / len(tokens))}
            if split == "train":
                counts = _bincount(tokens, settings.vocab_size)
        atomic_write_json(staging / "oracle.json", oracle)
        itos = [EOS if i == source.eos_id else f"w{i}" for i in range(source.num_words)] + [UNK]
        splits = {split: {"tokens": count} for split, count in split_tokens.items()}
        return Vocabulary(itos, counts.tolist()), {"source": asdict(settings), "splits": splits}

    cache = publish_cache(cache_dir, "synthetic", key, generate)
    if oracle:  # generated just now
        log.info("synthetic oracle: %s", json.dumps({s: round(v["ppl"], 3) for s, v in oracle["splits"].items()}))
    return cache.directory


def _bincount(tokens: np.ndarray, size: int) -> np.ndarray:
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, len(tokens), 1 << 22):
        counts += np.bincount(tokens[start : start + (1 << 22)], minlength=size)
    return counts


class SyntheticCorpus(Corpus):
    """The corpus a `MarkovSource` generates; `prepare()` builds (once) and loads its token cache."""

    name = "synthetic"

    def __init__(self, settings: SourceSettings, split_tokens: dict[str, int]) -> None:
        self.settings = settings
        self.split_tokens = split_tokens

    def prepare(self, cache_dir: Path, max_vocab_size: int | None = None, min_freq: int = 1) -> TokenCache:
        if max_vocab_size is not None or min_freq != 1:
            raise ConfigError("data=synthetic has a fixed vocabulary: set data.vocab_size, not max_vocab_size/min_freq")
        return TokenCache.load(prepare_synthetic_corpus(cache_dir, self.settings, self.split_tokens))
