"""Collectives nslm needs beyond DDP's all-reduce: gathering ids across ranks, and averaging sparse gradients.

Sparse gradients are exchanged as (row ids, row values), the way TensorFlow's distribution strategies and
Horovod exchange `IndexedSlices`, never densified:

    rank r: coalesce its gradient      -> n_r distinct rows: ids [n_r], values [n_r, D]
    all ranks: all_gather the counts   -> pad every rank's rows to max(n_r) (NCCL's all_gather needs one
               all_gather ids, values     shape on every rank), gather, drop the padding
    every rank: sum the rows of all ranks into one coalesced sparse gradient, divide by the world size

which is exactly the mean DDP gives a dense parameter (same learning rate on 1 or N ranks) and costs
O(ranks x rows touched x D) per step instead of the O(V x D) of a dense all-reduce. Works on gloo and NCCL
alike (NCCL has no sparse all-reduce). Every rank must call it for the same parameters in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather_padded(values: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
    """Every rank's `values` (rows along dim 0, `counts[r]` on rank r), padded for the exchange."""
    longest = max(counts)
    padded = values.new_zeros((longest, *values.shape[1:]))
    padded[: values.shape[0]] = values
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return [chunk[:count] for chunk, count in zip(gathered, counts, strict=True)]


def gather_from_all_ranks(values: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor's values from every rank (sizes may differ); no gradient flows through."""
    if not is_distributed():
        return values
    counts = _all_gather_counts(torch.tensor([values.numel()], device=values.device))
    return torch.cat(_all_gather_padded(values, [int(row[0]) for row in counts]))


def _all_gather_counts(counts: torch.Tensor) -> list[torch.Tensor]:
    gathered = [torch.empty_like(counts) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, counts)
    return [row.cpu() for row in gathered]


@torch.no_grad()
def average_gradients_across_ranks(params: Sequence[torch.nn.Parameter]) -> int:
    """Replace each parameter's gradient by its mean over all ranks: sparse ones as gathered rows, dense
    ones (a table whose gradient came out dense, e.g. tied weights) by all-reduce. A missing gradient counts
    as zero. Returns the bytes this rank sends under ring algorithms (benchmarks): (N-1) x its padded rows
    for an all_gather, 2 (N-1)/N x the tensor for an all-reduce."""
    if not is_distributed() or not params:
        return 0
    world = dist.get_world_size()
    sparse_rows: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []
    sent = 0
    for param in params:
        grad = param.grad
        if grad is not None and not grad.is_sparse:
            dist.all_reduce(grad)
            grad.div_(world)
            sent += 2 * (world - 1) * grad.numel() * grad.element_size() // world
            continue
        if grad is None:
            rows = torch.empty(0, dtype=torch.long, device=param.device)
            values = param.new_zeros((0, *param.shape[1:]))
        else:
            grad = grad.coalesce()
            rows, values = grad._indices()[0], grad._values()
        sparse_rows.append((param, rows, values))
    if not sparse_rows:
        return sent
    # one exchange of every table's row count, then ids and values per table
    local_counts = torch.tensor([len(rows) for _, rows, _ in sparse_rows], device=sparse_rows[0][1].device)
    all_counts = _all_gather_counts(local_counts)
    for index, (param, rows, values) in enumerate(sparse_rows):
        counts = [int(rank_counts[index]) for rank_counts in all_counts]
        all_rows = torch.cat(_all_gather_padded(rows, counts))
        all_values = torch.cat(_all_gather_padded(values, counts))
        sent += (world - 1) * max(counts) * (rows.element_size() + math.prod(param.shape[1:]) * values.element_size())
        param.grad = torch.sparse_coo_tensor(
            all_rows.unsqueeze(0), all_values / world, param.shape, check_invariants=False
        ).coalesce()
    return sent + (world - 1) * local_counts.numel() * local_counts.element_size()
