"""Mixed negative sampling (Yang et al. 2020): the batch's targets plus `num` ids from another sampler
(uniform over the vocabulary in the paper and in `sampler=mixed`; `sampler=mixed_unigram`: unigram^0.75).

Both sources are kept side by side; an id's expected count in the combined set is the sum of its
expected counts under each source, and that is what the correction subtracts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from nslm.errors import ConfigError
from nslm.samplers.base import Candidates, CandidateSampler, log_expected_count
from nslm.samplers.in_batch import InBatchSampler


class MixedSampler(CandidateSampler):
    uses_batch = True

    def __init__(
        self,
        counts: Sequence[int] | torch.Tensor,
        base: CandidateSampler | Callable[..., CandidateSampler],
        cross_device: bool = False,
    ) -> None:
        """`base`: a sampler, or a factory taking `counts` (Hydra `_partial_: true`); `cross_device`: the
        in-batch half takes the targets of every DDP rank."""
        super().__init__(counts)
        self.in_batch = InBatchSampler(counts, cross_device=cross_device)
        self.base = base if isinstance(base, CandidateSampler) else base(counts=counts)

    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        return self.base.log_prob(ids)

    def sample(self, num: int, targets: torch.Tensor, unique: bool = False, shared: bool = True) -> Candidates:
        if not shared:
            raise ConfigError("mixed negatives are shared by the batch: set loss.shared_negatives=true")
        batch = self.in_batch.sample(num, targets)
        drawn = self.base.sample(num, targets, unique=unique)

        def combined(ids: torch.Tensor) -> torch.Tensor:
            from_batch = log_expected_count(self.in_batch.log_prob(ids), batch.tries, unique=True)
            from_base = log_expected_count(self.base.log_prob(ids), drawn.tries, drawn.unique)
            return torch.logaddexp(from_batch, from_base)

        ids = torch.cat([batch.ids, drawn.ids])
        return Candidates(ids, combined(ids), combined(targets), tries=batch.tries + drawn.tries, unique=False)
