"""Exact softmax cross-entropy over the whole vocabulary: the baseline objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nslm.batch import IGNORE_INDEX
from nslm.losses.base import OutputObjective


class FullSoftmaxLoss(OutputObjective):
    """Mean cross-entropy over the non-padded targets, with every vocabulary word as a competitor."""

    #: the training loss is the true NLL, so exp(loss) is a perplexity (not so for sampled objectives)
    exact = True

    def forward(
        self, features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        logits = F.linear(features, weight, bias)
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
