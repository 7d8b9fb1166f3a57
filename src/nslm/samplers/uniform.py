"""Uniform proposal: Q(id) = 1 / V."""

from __future__ import annotations

import math

import torch

from nslm.samplers.base import CandidateSampler


class UniformSampler(CandidateSampler):
    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.full(ids.shape, -math.log(self.vocab_size), dtype=torch.float32, device=ids.device)

    def draw(self, num: int, device: torch.device) -> torch.Tensor:
        return torch.randint(self.vocab_size, (num,), device=device)
