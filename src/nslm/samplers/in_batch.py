"""In-batch negatives: the batch's own targets serve as candidates for every row (Yi et al. 2019).

The candidates are the distinct targets of the batch. A batch of n target tokens is n draws from the
training unigram distribution, so a word's expected presence is E = 1 - (1 - p)^n with p its unigram
probability: that is the logQ correction applied (unless `correct_bias=false`). Each row's own target is
among the candidates and is masked as an accidental hit.

With `cross_device=true` under DDP the candidates are the targets of every rank's batch (gathered ids;
the output embedding is replicated, so each rank scores them against its own copy and DDP's gradient
all-reduce stays correct): more negatives at the cost of one all_gather of ids per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nslm.distributed.collectives import gather_from_all_ranks
from nslm.errors import ConfigError
from nslm.samplers.base import Candidates, CandidateSampler, as_counts, log_expected_count


class InBatchSampler(CandidateSampler):
    uses_batch = True

    def __init__(self, counts: Sequence[int] | torch.Tensor, cross_device: bool = False) -> None:
        super().__init__(counts)
        self.cross_device = cross_device
        weights = as_counts(counts).clamp(min=1.0)
        self.register_buffer("log_q", (weights / weights.sum()).log().float(), persistent=False)

    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        return self.log_q[ids]

    def sample(self, num: int, targets: torch.Tensor, unique: bool = False, shared: bool = True) -> Candidates:
        if not shared:
            raise ConfigError("in-batch negatives are shared by the batch: set loss.shared_negatives=true")
        batch_targets = gather_from_all_ranks(targets) if self.cross_device else targets
        ids = torch.unique(batch_targets)
        tries = len(batch_targets)
        return Candidates(
            ids=ids,
            log_expected=log_expected_count(self.log_prob(ids), tries, unique=True),
            target_log_expected=log_expected_count(self.log_prob(targets), tries, unique=True),
            tries=tries,
            unique=True,
        )
