"""Cluster boundaries for adaptive softmax: checking the user's, and a default from the word counts.

Word ids are sorted by decreasing training frequency (`nslm.data.vocab`), so a cutoff list [c1, c2, ...]
puts ids [0, c1) in the head (scored by one full softmax together with one token per tail cluster) and
[c1, c2), [c2, c3), ..., [c_last, V) in tail clusters whose input is projected down by `div_value` more
per cluster (torch's `AdaptiveLogSoftmaxWithLoss`).

Default rule (`default_cutoffs`): the head is the smallest set of most frequent words that covers
HEAD_SHARE = 80% of the training tokens; the next boundary falls where the covered share first reaches
TAIL_SHARES = 95%, and the last cluster holds the rest. Why: Grave et al. (2017) build the head from the
few most frequent words that make up most of the text (in Penn Treebank 20% of the vocabulary covers 87%
of the tokens), so that most tokens are scored by the small head alone, and give the rare words, seen
little and most costly, the clusters with the smallest projections. Shares rather than word counts make the
rule follow the corpus: PTB's training counts give [1072, 4754]; a Zipfian (1/rank) profile gives a head
of about 1.4k words at V = 10k and about 56k at V = 1M. Two tail clusters keep the rarest words at
in_features / 16 dimensions (12 at 200): a third, at / 64, would leave them almost no capacity.
Boundaries that coincide are merged, every cutoff is kept in 1..V-1, and there are never more tail
clusters than the projections allow (each needs at least one dimension: in_features // div_value**i >= 1);
a 2-word vocabulary gets [1].
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from nslm.errors import ConfigError
from nslm.utils.checks import is_finite_number

#: share of training tokens covered by the head
HEAD_SHARE = 0.8
#: covered shares at which the following tail clusters end (the last cluster takes what remains)
TAIL_SHARES = (0.95,)


def max_tail_clusters(in_features: int, div_value: float) -> int:
    """How many tail clusters keep a projection of at least one dimension (torch sizes cluster i's
    projection int(in_features // div_value**i), i = 1, 2, ...)."""
    if div_value <= 1.0:
        return 1 << 30  # no shrinkage: any number
    count = 0
    while int(in_features // div_value ** (count + 1)) >= 1:
        count += 1
    return count


def default_cutoffs(vocab_size: int, counts: Sequence[int] | None, in_features: int, div_value: float) -> list[int]:
    """Cutoffs from the frequency profile (see the module docstring); a Zipf profile (count ~ 1/rank)
    stands in when `counts` is None or all zero."""
    mass = torch.as_tensor(counts, dtype=torch.float64) if counts is not None else torch.zeros(0)
    if mass.numel() != vocab_size or float(mass.sum()) <= 0:
        mass = 1.0 / torch.arange(1, vocab_size + 1, dtype=torch.float64)
    covered = torch.cumsum(mass, 0) / mass.sum()
    shares = torch.tensor((HEAD_SHARE, *TAIL_SHARES), dtype=torch.float64)
    # words needed to reach each share: one past the first index whose cumulative share reaches it
    needed = (torch.searchsorted(covered, shares) + 1).tolist()
    cutoffs: list[int] = []
    for cut in needed:
        cut = min(max(int(cut), 1), vocab_size - 1)
        if not cutoffs or cut > cutoffs[-1]:
            cutoffs.append(cut)
    return cutoffs[: max(1, max_tail_clusters(in_features, div_value))]


def checked_cutoffs(cutoffs: Sequence[int], vocab_size: int, in_features: int, div_value: float) -> list[int]:
    """The user's cutoffs as ints, or a one-line ConfigError saying what is wrong with them."""
    # a string is a Sequence too: `loss.cutoffs=abc` must not read as ['a', 'b', 'c']
    if isinstance(cutoffs, str | bytes) or not isinstance(cutoffs, Sequence):
        raise ConfigError(
            f"loss.cutoffs must be a list of increasing ids, e.g. [2000, 10000], or null for the default, "
            f"got {cutoffs!r}"
        )
    values = list(cutoffs)
    if not values:
        raise ConfigError("loss.cutoffs is empty: give at least one cluster boundary, or null for the default")
    for value in values:
        if not is_finite_number(value) or int(value) != value:
            raise ConfigError(f"loss.cutoffs must be whole numbers (word ids), got {values}")
    values = [int(value) for value in values]
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ConfigError(f"loss.cutoffs must be strictly increasing, got {values}")
    if values[0] < 1 or values[-1] > vocab_size - 1:
        raise ConfigError(f"loss.cutoffs must lie in 1..{vocab_size - 1} (vocabulary of {vocab_size}), got {values}")
    allowed = max_tail_clusters(in_features, div_value)
    if len(values) > allowed:
        raise ConfigError(
            f"loss.cutoffs makes {len(values)} tail clusters but in_features {in_features} / div_value "
            f"{div_value} leaves room for {allowed} (each projection needs >= 1 dimension): "
            "give fewer cutoffs or a smaller loss.div_value"
        )
    return values
