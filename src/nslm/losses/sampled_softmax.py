"""Sampled softmax (Jean et al. 2015), TensorFlow's `sampled_softmax_loss` semantics: cross-entropy over
[target | candidates] of the corrected scores s - log E, accidental hits removed."""

from __future__ import annotations

import torch

from nslm.losses.sampled import SampledLoss, SampledScores, at_least_fp32


class SampledSoftmaxLoss(SampledLoss):
    name = "sampled_softmax"

    def objective(self, scores: SampledScores) -> torch.Tensor:
        # -inf (not -FLT_MAX) removes a hit exactly and cannot overflow in low precision; the target
        # column is always finite, so the log-sum-exp is too.
        candidates = at_least_fp32(scores.candidates).masked_fill(scores.hits, float("-inf"))
        logits = torch.cat([at_least_fp32(scores.target).unsqueeze(-1), candidates], dim=-1)
        return torch.logsumexp(logits, dim=-1) - logits[:, 0]
