"""Global-norm gradient clipping over a mix of dense and sparse gradients (torch's own rejects sparse)."""

from __future__ import annotations

import torch


@torch.no_grad()
def clip_sparse_aware_(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ for dense and sparse gradients alike; returns the total norm before clipping.

    A sparse gradient from `F.embedding(sparse=True)` may repeat a row; it is coalesced first so the norm
    is that of the dense gradient it stands for."""
    norms = []
    for param in params:
        if param.grad.is_sparse:
            param.grad = param.grad.coalesce()
            norms.append(param.grad._values().norm())
        else:
            norms.append(param.grad.norm())
    total = torch.stack(norms).norm()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for param in params:
        (param.grad._values() if param.grad.is_sparse else param.grad).mul_(scale)
    return total
