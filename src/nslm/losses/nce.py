"""Noise-contrastive estimation (Mnih & Teh 2012) with Z fixed to 1, TensorFlow's `nce_loss` semantics.

P(D=1 | w, h) = sigmoid(s(w) - log(k Q(w))): the target is classified as data, the k candidates as
noise; the per-row loss sums the logistic losses of the 1 + k columns. With Z = 1 the model must learn to
self-normalise, so the output bias starts at -log V (scores start out as log(1/V)); validation logs the
mean and spread of log Z to show how well it does.

Accidental hits (a noise sample equal to the target) are kept, as in TF's `nce_loss`: NCE's optimum is
then exp(s(w)) = p(w | h), a normalised model. Removing them (`loss.remove_accidental_hits=true`) weights
w's noise term by k Q(w) (1 - p(w)) and moves the optimum to exp(s) = p / (1 - p): the log-odds, neither
normalised nor NCE (tests/test_sampled_losses.py trains free scores to both optima). With in-batch and
mixed samplers the row's own target is a candidate by construction, not a noise draw: it is removed there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nslm.losses.sampled import SampledLoss, SampledScores, at_least_fp32


def logistic_loss(target: torch.Tensor, candidates: torch.Tensor, hits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(target) - sum_j log sigmoid(-candidate_j), hits excluded."""
    noise = F.softplus(at_least_fp32(candidates)).masked_fill(hits, 0.0).sum(-1)
    return F.softplus(-at_least_fp32(target)) + noise


class NCELoss(SampledLoss):
    name = "nce"
    removes_hits_by_default = False

    def initialize_output_layer(self, bias: torch.Tensor | None) -> None:
        if bias is not None:
            with torch.no_grad():
                bias.fill_(-math.log(self.sampler.vocab_size))

    def objective(self, scores: SampledScores) -> torch.Tensor:
        return logistic_loss(scores.target, scores.candidates, scores.hits)
