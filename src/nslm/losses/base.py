"""What every training objective provides to the module, to evaluation and to generation.

    forward(features, targets, W, b)   the training loss (mean over real targets)
    token_nll(features, targets, W, b) exact per-token NLL and log Z under the model the objective
                                       trains: full softmax over W for every objective but adaptive
                                       softmax, whose own normalised distribution is exact for it
    log_probs(features, W, b)          normalised log-probabilities over the vocabulary (generation)

`W`, `b` are the network's output embedding and bias; an objective with its own output parameters
(`owns_output_layer`, adaptive softmax) ignores them and the network builds no decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nslm.losses.exact import exact_token_nll


class OutputObjective(nn.Module):
    #: how runs, histories and reports name it (the `loss` config option)
    name = "objective"
    #: the training loss is the exact NLL, so exp(loss) is a perplexity (train/ppl is logged)
    exact = False
    #: the output embedding's gradient is a sparse tensor over the rows a step used
    sparse_gradients = False
    #: the objective has its own output parameters; the network's decoder is not built
    owns_output_layer = False

    def initialize_output_layer(self, bias: torch.Tensor | None) -> None:
        """Hook for objectives that need a particular output-bias start (NCE)."""

    def forward(
        self, features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def token_nll(
        self, features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token NLL [N] (0 where the target is IGNORE_INDEX) and log Z [N], float32."""
        return exact_token_nll(features, targets, weight, bias)

    def log_probs(self, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """[N, V] normalised log-probabilities of the next word."""
        return F.log_softmax(F.linear(features, weight, bias).float(), dim=-1)
