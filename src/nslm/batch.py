"""What flows from the data to the model: a window of token ids and its targets.

A neutral home (no data or model code here), so losses, the module and the data pipeline all import it
without importing each other.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: target id of a padded position: never scored, never counted (torch's cross_entropy default)
IGNORE_INDEX = -100


class TokenWindow(NamedTuple):
    inputs: torch.Tensor  # [bptt, batch] int64
    targets: torch.Tensor  # [bptt, batch] int64, IGNORE_INDEX where padded
    num_tokens: int  # targets that count (not padded)
