"""Exact full-softmax negative log-likelihood, in row chunks so a huge vocabulary never needs a giant
logit matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nslm.data.windows import IGNORE_INDEX

MAX_LOGITS_PER_CHUNK = 1 << 24  # 64 MB of fp32 logits at a time


@torch.no_grad()
def exact_token_nll(
    features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Per-token NLL [N] in float32 (0 where the target is IGNORE_INDEX). features [N, D], targets [N]."""
    rows = max(1, MAX_LOGITS_PER_CHUNK // weight.shape[0])
    pieces = []
    for start in range(0, features.shape[0], rows):
        logits = F.linear(features[start : start + rows], weight, bias).float()
        pieces.append(
            F.cross_entropy(logits, targets[start : start + rows], ignore_index=IGNORE_INDEX, reduction="none")
        )
    return torch.cat(pieces)
