"""Adaptive softmax (Grave, Joulin, Cissé, Grangier, Jégou 2017) through torch's
`nn.AdaptiveLogSoftmaxWithLoss`: an exact, normalised model whose cost is a small head softmax plus the
tail cluster of each target, with lower-dimensional projections for rarer clusters.

It owns its output layer (the network builds no decoder) and its training loss is the exact NLL of its own
model, so train/val perplexities are true perplexities of that model and compare with full softmax's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from nslm.batch import IGNORE_INDEX
from nslm.errors import ConfigError
from nslm.losses.adaptive_cutoffs import checked_cutoffs, default_cutoffs, max_tail_clusters
from nslm.losses.base import OutputObjective
from nslm.losses.exact import MAX_LOGITS_PER_CHUNK
from nslm.utils.checks import is_finite_number


class AdaptiveSoftmaxLoss(OutputObjective):
    """Mean NLL over the non-padded targets under an adaptive softmax of `vocab_size` words.

    vocab_size, in_features: the vocabulary and the feature size (the network's output dimension).
    counts: training word counts by id (ids sorted by decreasing frequency), for the default cutoffs.
    cutoffs: cluster boundaries [c1, c2, ...] (head = ids < c1); None: derived from `counts`
        (`adaptive_cutoffs.default_cutoffs`).
    div_value: each tail cluster's projection is div_value times smaller than the previous one.
    head_bias: give the head softmax a bias (the tails have none, as in torch).
    init_range: every parameter ~ U(-r, r) (Zaremba et al.'s init, with model.net.uniform_init_all); None:
        torch's default initialisation of its layers.
    """

    name = "adaptive"

    exact = True
    owns_output_layer = True

    def __init__(
        self,
        vocab_size: int,
        in_features: int,
        counts: Sequence[int] | None = None,
        cutoffs: Sequence[int] | None = None,
        div_value: float = 4.0,
        head_bias: bool = True,
        init_range: float | None = None,
    ) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ConfigError(f"adaptive softmax needs a vocabulary of at least 2 words, got {vocab_size}")
        if in_features < 1:
            raise ConfigError(f"adaptive softmax needs in_features >= 1, got {in_features}")
        if not (is_finite_number(div_value) and div_value >= 1.0):
            raise ConfigError(
                f"loss.div_value must be a number >= 1 (tail projections shrink by it), got {div_value!r}"
            )
        if init_range is not None and not (is_finite_number(init_range) and init_range > 0):
            raise ConfigError(
                f"loss.init_range must be a number > 0 (parameters ~ U(-r, r)), or null for torch's default "
                f"initialisation, got {init_range!r}"
            )
        if max_tail_clusters(in_features, div_value) < 1:
            raise ConfigError(
                f"loss.div_value {div_value} exceeds in_features {in_features}: the tail projection would have "
                "0 dimensions; lower loss.div_value"
            )
        if counts is not None and len(counts) != vocab_size:
            raise ConfigError(f"adaptive softmax got {len(counts)} word counts for a vocabulary of {vocab_size}")
        if cutoffs is None:
            cutoffs = default_cutoffs(vocab_size, counts, in_features, div_value)
        else:
            cutoffs = checked_cutoffs(cutoffs, vocab_size, in_features, div_value)
        self.cutoffs: list[int] = list(cutoffs)
        self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
            in_features, vocab_size, self.cutoffs, div_value=float(div_value), head_bias=bool(head_bias)
        )
        if init_range is not None:
            for parameter in self.adaptive.parameters():
                nn.init.uniform_(parameter, -init_range, init_range)
        # cluster boundaries [c1, ..., V] on the features' device, for bucketize (not saved: derived)
        self.register_buffer("_bounds", torch.tensor(self.adaptive.cutoffs), persistent=False)
        # widest softmax one row needs (head or a cluster): bounds a token_nll chunk's logits
        sizes = (high - low for low, high in itertools.pairwise(self.adaptive.cutoffs))  # cutoffs end with V
        self._widest = max(self.adaptive.head_size, *sizes)

    def _input(self, features: torch.Tensor) -> torch.Tensor:
        # matmuls in the parameters' dtype, or autocast's where it is on (it casts inside the Linear layers)
        return features.to(self.adaptive.head.weight.dtype)

    def target_log_prob(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) [N], fp32, from the head and the target's own cluster (what torch's forward
        computes, re-done here because torch's writes autocast's bf16 log-softmax into an fp32 buffer and fails
        under CPU autocast). Every cluster runs, on the rows it owns or on none: each tail parameter then gets
        a gradient on every step (zero when no target fell in its cluster), which DDP with
        find_unused_parameters=False requires. Targets must lie in [0, V) (out-of-range ids fail in gather)."""
        adaptive = self.adaptive
        x = self._input(features)
        cluster = torch.bucketize(targets, self._bounds, right=True)  # 0: head word, i: tail cluster i
        head_column = torch.where(cluster == 0, targets, adaptive.shortlist_size + cluster - 1)
        head_log_prob = torch.log_softmax(adaptive.head(x).float(), dim=1)
        out = head_log_prob.gather(1, head_column.unsqueeze(1)).squeeze(1)
        for i, (low, projection) in enumerate(zip(adaptive.cutoffs, adaptive.tail, strict=False)):
            rows = (cluster == i + 1).nonzero().squeeze(1)
            cluster_log_prob = torch.log_softmax(projection(x.index_select(0, rows)).float(), dim=1)
            within = cluster_log_prob.gather(1, (targets.index_select(0, rows) - low).unsqueeze(1)).squeeze(1)
            out = out.index_add(0, rows, within)
        return out

    def forward(
        self, features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean NLL over the real targets (NaN when there are none, as F.cross_entropy); `weight` and
        `bias` are unused (the objective owns its output layer)."""
        valid = targets != IGNORE_INDEX
        return -self.target_log_prob(features[valid], targets[valid]).mean()

    @torch.no_grad()
    def token_nll(
        self, features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact NLL [N] of each target (0 where IGNORE_INDEX) from the head and the target's cluster only,
        in row chunks of at most MAX_LOGITS_PER_CHUNK logits per softmax; log Z = 0 (normalised model)."""
        valid = targets != IGNORE_INDEX
        safe = torch.where(valid, targets, torch.zeros_like(targets))
        rows = max(1, MAX_LOGITS_PER_CHUNK // self._widest)
        parts = [-self.target_log_prob(features[s : s + rows], safe[s : s + rows]) for s in range(0, len(safe), rows)]
        nll = torch.cat(parts) if parts else features.new_zeros(0, dtype=torch.float32)
        nll = torch.where(valid, nll, torch.zeros_like(nll))
        return nll, torch.zeros_like(nll)

    def log_probs(self, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """[N, V] normalised log-probabilities: head words, then each cluster's words offset by the log-prob
        of its head token (torch's `log_prob`, with every log-softmax in fp32 also under autocast)."""
        adaptive = self.adaptive
        x = self._input(features)
        head = torch.log_softmax(adaptive.head(x).float(), dim=1)
        parts = [head[:, : adaptive.shortlist_size]]
        for i, projection in enumerate(adaptive.tail):
            token = adaptive.shortlist_size + i
            parts.append(torch.log_softmax(projection(x).float(), dim=1) + head[:, token : token + 1])
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"cutoffs={self.cutoffs}"
