"""Exact full-softmax negative log-likelihood, in row chunks so a huge vocabulary never needs a giant
logit matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nslm.batch import IGNORE_INDEX

MAX_LOGITS_PER_CHUNK = 1 << 24  # 64 MB of fp32 logits at a time


@torch.no_grad()
def exact_token_nll(
    features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL [N] and log partition function log Z [N], float32; NLL is 0 where the target is
    IGNORE_INDEX. features [N, D], targets [N]."""
    rows = max(1, MAX_LOGITS_PER_CHUNK // weight.shape[0])
    nll, log_z = [], []
    for start in range(0, features.shape[0], rows):
        logits = F.linear(features[start : start + rows], weight, bias).float()
        chunk_targets = targets[start : start + rows]
        valid = chunk_targets != IGNORE_INDEX
        lse = torch.logsumexp(logits, dim=-1)
        target_logit = logits.gather(1, chunk_targets.clamp(min=0).unsqueeze(1)).squeeze(1)
        nll.append(torch.where(valid, lse - target_logit, torch.zeros_like(lse)))
        log_z.append(lse)
    return torch.cat(nll), torch.cat(log_z)
