"""Unigram proposal from the training counts: Q(id) = count^alpha / sum (alpha 0.75: word2vec's choice).

Words never seen in training (e.g. an unused `<unk>`) get count 1 so every id has Q > 0: a target with
Q = 0 would get an infinite correction. Drawing inverts a precomputed float64 CDF with a binary search:
O(k log V) per draw, the table is built once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nslm.errors import ConfigError
from nslm.samplers.base import CandidateSampler, as_counts
from nslm.utils.checks import is_finite_number


class UnigramSampler(CandidateSampler):
    def __init__(self, counts: Sequence[int] | torch.Tensor, alpha: float = 0.75) -> None:
        super().__init__(counts)
        if not is_finite_number(alpha) or alpha < 0:
            raise ConfigError(f"sampler.alpha must be a number >= 0 (0.75: word2vec, 1: the unigram), got {alpha!r}")
        self.alpha = alpha
        weights = as_counts(counts).clamp(min=1.0).pow(alpha)
        probs = weights / weights.sum()
        self.register_buffer("log_q", probs.log().float(), persistent=False)
        self.register_buffer("cdf", torch.cumsum(probs, 0), persistent=False)

    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        return self.log_q[ids]

    def draw(self, num: int, device: torch.device) -> torch.Tensor:
        uniform = torch.rand(num, dtype=torch.float64, device=self.cdf.device) * self.cdf[-1]
        ids = torch.searchsorted(self.cdf, uniform, right=True).clamp_(max=self.vocab_size - 1)
        return ids.to(device)
