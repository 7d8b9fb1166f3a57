"""word2vec's negative sampling (Mikolov et al. 2013): log sigmoid(s_target) + sum_j log sigmoid(-s_j).

No logQ correction by default (it learns useful vectors, not calibrated LM probabilities); with
in-batch or mixed candidates the correction is applied unless `correct_bias=false`. Like word2vec
(which skips a negative equal to the target) it removes accidental hits. Its optimum is
exp(s(w)) = p(w) / (k Q(w) (1 - p(w))): a shifted PMI-like score, not a probability; exact perplexity of a
NEG-trained model is therefore poor however long it trains (tests/test_sampled_losses.py checks the optimum).
"""

from __future__ import annotations

import torch

from nslm.losses.nce import logistic_loss
from nslm.losses.sampled import SampledLoss, SampledScores


class NegativeSamplingLoss(SampledLoss):
    name = "neg"
    correct_by_default = False

    def objective(self, scores: SampledScores) -> torch.Tensor:
        return logistic_loss(scores.target, scores.candidates, scores.hits)
