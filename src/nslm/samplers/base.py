"""Candidate samplers: draw negative ids on the model's device and report their expected counts.

Every sampler defines a proposal distribution Q over the vocabulary and can evaluate log Q(id) for any
id. A draw of `k` candidates reports, for each candidate and for each target, the log of its *expected
count* in the draw, the quantity the losses subtract ("logQ correction", TensorFlow's subtract_log_q):

    with replacement:             E(id) = k * Q(id)
    unique (rejection sampling):  E(id) = 1 - (1 - Q(id)) ** tries     tries = draws made to get k distinct
                                  computed as -expm1(tries * log1p(-Q)) for precision; like TF it treats
                                  `tries` as fixed, a close (not exact) inclusion probability

Drawing costs O(k log V) at most (precomputed tables or closed forms), never O(V) per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nslm.errors import ConfigError


@dataclass
class Candidates:
    ids: torch.Tensor  # [k] shared by all rows, or [rows, k] per row
    log_expected: torch.Tensor  # log expected count of each candidate, same shape as ids
    target_log_expected: torch.Tensor  # [rows] log expected count of each row's target
    tries: int  # draws made (k with replacement; more when unique)
    unique: bool


def log_expected_count(log_q: torch.Tensor, tries: int, unique: bool) -> torch.Tensor:
    if not unique:
        return log_q + math.log(tries)
    # log(1 - (1-Q)^tries); Q == 1 would mean log(1) = 0, log1p(-1) = -inf handled by expm1(-inf) = -1
    return torch.log(-torch.expm1(tries * torch.log1p(-log_q.exp().clamp(max=1.0))))


class CandidateSampler(nn.Module):
    """Base class: subclasses implement `log_prob` (log Q) and `draw` (i.i.d. ids from Q)."""

    #: the candidates come from the batch itself (logQ correction is then on by default for every loss)
    uses_batch = False
    #: the proposal tracks the model: `SampledLoss` calls `observe` before every draw
    follows_model = False

    def __init__(self, counts: Sequence[int] | torch.Tensor) -> None:
        super().__init__()
        self.vocab_size = len(counts)
        if self.vocab_size < 1:
            raise ConfigError("a sampler needs a non-empty vocabulary")

    def observe(self, features: torch.Tensor, weight: torch.Tensor) -> None:
        """The batch's context features [rows, D] and the current output embedding [V, D], both detached;
        samplers whose proposal tracks the model override it."""

    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def draw(self, num: int, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        buffer = next(self.buffers(), None)
        return buffer.device if buffer is not None else torch.device("cpu")

    def draw_unique(self, num: int, device: torch.device) -> tuple[torch.Tensor, int]:
        """`num` distinct ids by rejection (in draw order) and the number of draws it took."""
        if num > self.vocab_size:
            raise ConfigError(
                f"cannot draw {num} distinct negatives from a vocabulary of {self.vocab_size}; "
                "lower loss.num_negatives or set loss.unique=false"
            )
        drawn = torch.empty(0, dtype=torch.long, device=device)
        batch = max(2 * num, 16)
        while True:
            drawn = torch.cat([drawn, self.draw(batch, device)])
            _, inverse = torch.unique(drawn, return_inverse=True)
            positions = torch.arange(len(drawn), device=device)
            first = torch.full((int(inverse.max()) + 1,), len(drawn), dtype=torch.long, device=device)
            first = first.scatter_reduce(0, inverse, positions, reduce="amin")
            is_first = first[inverse] == positions
            distinct_so_far = torch.cumsum(is_first, 0)
            if int(distinct_so_far[-1]) >= num:
                tries = int(torch.searchsorted(distinct_so_far, torch.tensor(num, device=device))) + 1
                return drawn[:tries][is_first[:tries]], tries
            batch *= 2

    def sample(self, num: int, targets: torch.Tensor, unique: bool = False, shared: bool = True) -> Candidates:
        """Draw `num` candidates for the rows whose targets are given ([rows], all valid ids)."""
        device = targets.device
        if shared:
            if unique:
                ids, tries = self.draw_unique(num, device)
            else:
                ids, tries = self.draw(num, device), num
        else:
            if unique:
                raise ConfigError("per-row negatives are drawn with replacement: set loss.unique=false")
            ids, tries = self.draw(num * len(targets), device).view(len(targets), num), num
        return Candidates(
            ids=ids,
            log_expected=log_expected_count(self.log_prob(ids), tries, unique),
            target_log_expected=log_expected_count(self.log_prob(targets), tries, unique),
            tries=tries,
            unique=unique,
        )


def as_counts(counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(counts, dtype=torch.float64)
