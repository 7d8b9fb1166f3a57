"""Output objectives (`base.OutputObjective`). Each takes LSTM features, targets and the output embedding
and returns a loss; evaluation goes through the objective's `token_nll`, the exact normalised NLL of the
model, so every objective is measured on the same ruler."""

from nslm.losses.adaptive import AdaptiveSoftmaxLoss
from nslm.losses.base import OutputObjective
from nslm.losses.chunked_ce import chunked_cross_entropy
from nslm.losses.exact import exact_token_nll
from nslm.losses.full import FullSoftmaxLoss
from nslm.losses.nce import NCELoss
from nslm.losses.neg import NegativeSamplingLoss
from nslm.losses.sampled import SampledLoss
from nslm.losses.sampled_softmax import SampledSoftmaxLoss

__all__ = [
    "AdaptiveSoftmaxLoss",
    "FullSoftmaxLoss",
    "NCELoss",
    "NegativeSamplingLoss",
    "OutputObjective",
    "SampledLoss",
    "SampledSoftmaxLoss",
    "chunked_cross_entropy",
    "exact_token_nll",
]
