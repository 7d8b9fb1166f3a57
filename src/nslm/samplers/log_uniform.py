"""Log-uniform (Zipfian) proposal over frequency-sorted ids, TensorFlow's LogUniformCandidateSampler:

    Q(k) = (log(k + 2) - log(k + 1)) / log(V + 1),     drawn as  floor(exp(U * log(V + 1))) - 1

Closed form both ways: no table, O(k) per draw. Valid because nslm's vocabulary ids are sorted by
decreasing training frequency.
"""

from __future__ import annotations

import math

import torch

from nslm.samplers.base import CandidateSampler


class LogUniformSampler(CandidateSampler):
    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        k = ids.double()
        q = (torch.log(k + 2) - torch.log(k + 1)) / math.log(self.vocab_size + 1)
        return q.log().float()

    def draw(self, num: int, device: torch.device) -> torch.Tensor:
        uniform = torch.rand(num, dtype=torch.float64, device=device)
        ids = torch.floor(torch.exp(uniform * math.log(self.vocab_size + 1))).long() - 1
        return ids.clamp_(0, self.vocab_size - 1)
