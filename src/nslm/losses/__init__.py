"""Output objectives. Each takes LSTM features, targets and the output embedding and returns a loss;
evaluation always goes through `exact_token_nll` so every objective is measured on the same ruler."""

from nslm.losses.exact import exact_token_nll
from nslm.losses.full import FullSoftmaxLoss

__all__ = ["FullSoftmaxLoss", "exact_token_nll"]
