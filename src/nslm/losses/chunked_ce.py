"""Exact mean softmax cross-entropy whose forward and backward never hold the [rows x V] logit matrix.

At a large vocabulary the logits and their gradient dominate training memory (rows x V x 4 bytes each:
700 rows at V = 1M is 2.8 GB). As in Cut Cross-Entropy and Liger-Kernel's fused linear cross-entropy, the
loss is computed block by block and the backward recomputes each block instead of storing it: only the
features, the output layer, the targets and one log-sum-exp per row are kept between the passes.

Blocks run over the vocabulary (columns of the logits), not over rows: each block's rows of the weight
gradient are then written once (no dense [V, D] read-modify-write per block), the per-block matmuls keep a
long inner dimension (the rows, or the block width) so they stay efficient, and the only accumulator is the
small [rows, D] feature gradient. The row log-sum-exp is combined across blocks exactly (logaddexp). The
per-row factor grad / n_valid (0 on ignored rows) is applied to the [rows, D] operands, not to each block's
[rows, block] gradient, which saves a pass over every block.

Mixed precision: under torch.autocast the matmuls run in the autocast dtype, as F.linear would (W is cast
once per pass, as autocast's cast cache does); the log-sum-exp, softmax and all accumulators are fp32 (fp64
for fp64 inputs); the backward uses the precision the forward saw (what torch.amp.custom_bwd does), and the
gradients come back in each input's own dtype. (Under CUDA autocast F.cross_entropy on bf16 logits is less
exact: on an H100 it gave 9.448954 where the fp32 log-softmax of the same bf16 logits gives 9.449712.)

Cost (H100, 700 rows x 200 features, V = 800k, loss + backward, fp32): 22 ms and 128 MiB above the inputs
with the default 2^24 logits per block, against 11.5 ms and 5.8 GiB for F.linear + F.cross_entropy; the
recomputed matmul and the extra passes over each block are the price (2^26 per block: 17 ms, 512 MiB).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from nslm.batch import IGNORE_INDEX
from nslm.losses.exact import MAX_LOGITS_PER_CHUNK


def chunked_cross_entropy(
    features: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    max_logits_per_chunk: int = MAX_LOGITS_PER_CHUNK,
) -> torch.Tensor:
    """`F.cross_entropy(F.linear(features, weight, bias), targets, ignore_index=IGNORE_INDEX)` (mean over
    the non-ignored targets; NaN when there are none, as torch) without materialising the logits.

    features [N, D], targets [N] int64, weight [V, D], bias [V] or None. A block holds at most
    max(max_logits_per_chunk, N) logits (one vocabulary column per block when N alone exceeds the bound).
    """
    return _ChunkedCrossEntropy.apply(features, targets, weight, bias, int(max_logits_per_chunk))


def _precision(features: torch.Tensor, weight: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(matmul dtype, softmax/accumulation dtype) for these inputs under the current autocast state."""
    device_type = features.device.type
    if torch.is_autocast_enabled(device_type) and features.dtype != torch.float64:
        compute = torch.get_autocast_dtype(device_type)
    else:
        compute = torch.promote_types(features.dtype, weight.dtype)
    return compute, torch.promote_types(compute, torch.float32)


def _autocast_off(device_type: str) -> AbstractContextManager:
    """The casts here are explicit; autocast must not re-cast the fp32 softmax work."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


def _block_width(rows: int, max_logits: int) -> int:
    """Vocabulary columns per block: as many as the bound allows, rounded down to a multiple of 128 so every
    block's rows are 16-byte aligned (an odd width, 2^24 // 700 = 23967, put cuBLAS on pre-Hopper kernels
    that took twice as long on an H100)."""
    width = max(1, max_logits // max(rows, 1))
    return width - width % 128 if width >= 128 else width


def _cast(tensor: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """One cast per pass, not per block (what autocast's weight cache does for F.linear)."""
    return None if tensor is None else tensor.to(dtype)


class _TargetColumns:
    """Which block each target falls in and its column there, worked out once per pass: the block loop then
    spends one small kernel per block on the targets (its Python and launch cost is what bounds the loop's
    speed once the blocks are many)."""

    def __init__(self, targets: torch.Tensor, vocab: int, width: int) -> None:
        valid = targets != IGNORE_INDEX
        safe = torch.where(valid, targets, torch.zeros_like(targets))
        self.block = torch.where(valid, torch.div(safe, width, rounding_mode="floor"), -1)  # ignored: no block
        self.column = torch.remainder(safe, width).unsqueeze(1)
        self.last = (vocab - 1) // width
        # the last block may be narrower: rows whose target lies elsewhere must still index inside it
        self.last_column = self.column.clamp(max=vocab - self.last * width - 1)

    def blocks(self, vocab: int, width: int) -> Iterator[tuple[int, int, int, torch.Tensor]]:
        """(block number, first column, end column, [rows, 1] column of each row's target in the block)."""
        for number, start in enumerate(range(0, vocab, width)):
            yield number, start, min(start + width, vocab), self.last_column if number == self.last else self.column


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        features: torch.Tensor,
        targets: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        max_logits_per_chunk: int,
    ) -> torch.Tensor:
        ctx.compute_dtype, ctx.acc_dtype = _precision(features, weight)
        rows, vocab = features.shape[0], weight.shape[0]
        ctx.width = _block_width(rows, max_logits_per_chunk)
        # F.cross_entropy rejects such targets; a block loop would silently score them as logit 0
        bad = (targets >= vocab) | ((targets < 0) & (targets != IGNORE_INDEX))
        torch._assert_async(~bad.any(), f"cross-entropy target outside [0, {vocab}) and not {IGNORE_INDEX}")
        with _autocast_off(features.device.type):
            x, w, b = (_cast(t, ctx.compute_dtype) for t in (features, weight, bias))
            cols = _TargetColumns(targets, vocab, ctx.width)
            lse = torch.full((rows,), float("-inf"), dtype=ctx.acc_dtype, device=features.device)
            target_logit = torch.zeros(rows, dtype=ctx.acc_dtype, device=features.device)
            for number, start, end, column in cols.blocks(vocab, ctx.width):
                logits = F.linear(x, w[start:end], None if b is None else b[start:end]).to(ctx.acc_dtype)
                # the target's logit from these very logits, so that it and the log-sum-exp round alike
                target_logit = torch.where(cols.block == number, logits.gather(1, column).squeeze(1), target_logit)
                lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
            valid = targets != IGNORE_INDEX
            nll = torch.where(valid, lse - target_logit, torch.zeros_like(lse))
            loss = nll.sum() / valid.sum()  # 0 / 0 = NaN with no real target, as F.cross_entropy
        ctx.save_for_backward(features, targets, weight, bias, lse)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        features, targets, weight, bias, lse = ctx.saved_tensors
        need_x, _, need_w, need_b, _ = ctx.needs_input_grad
        rows, vocab = features.shape[0], weight.shape[0]
        acc, compute = ctx.acc_dtype, ctx.compute_dtype
        with _autocast_off(features.device.type):
            x, w, b = (_cast(t, compute) for t in (features, weight, bias))
            cols = _TargetColumns(targets, vocab, ctx.width)
            valid = targets != IGNORE_INDEX
            # d mean / d logit = s * (softmax - onehot), s = grad / n_valid on real targets and 0 on ignored
            # ones; s multiplies the [rows, D] operands instead of every block
            scale = torch.where(valid, grad_loss.to(acc) / valid.sum().clamp(min=1), 0.0)
            # scaled in fp32, then cast: a bf16 scale would bias every weight gradient by its rounding
            scaled_x = (features.to(acc) * scale.unsqueeze(1)).to(compute) if need_w else None
            minus_one = torch.full((rows, 1), -1.0, dtype=acc, device=x.device)
            grad_x = torch.zeros(rows, x.shape[1], dtype=acc, device=x.device) if need_x else None
            grad_w = torch.empty_like(weight) if need_w else None
            grad_b = torch.empty_like(bias) if need_b else None
            for number, start, end, column in cols.blocks(vocab, ctx.width):
                logits = F.linear(x, w[start:end], None if b is None else b[start:end]).to(acc)
                onehot = torch.where((cols.block == number).unsqueeze(1), minus_one, 0.0)
                delta = logits.sub_(lse.unsqueeze(1)).exp_().scatter_add_(1, column, onehot)  # softmax - onehot
                g = delta.to(compute)
                if need_b:
                    _write(grad_b[start:end], delta.t(), scale)
                if need_x:
                    if grad_x.dtype == g.dtype:
                        grad_x.addmm_(g, w[start:end])
                    else:
                        grad_x += g @ w[start:end]
                if need_w:
                    _write(grad_w[start:end], g.t(), scaled_x)
        grad_x = (grad_x * scale.unsqueeze(1)).to(features.dtype) if need_x else None
        return grad_x, None, grad_w, grad_b, None


def _write(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> None:
    """out = left @ right, straight into `out` (a block of a gradient) when the dtypes allow."""
    if out.dtype == left.dtype == right.dtype:
        torch.matmul(left, right, out=out)
    else:
        out.copy_(left @ right.to(left.dtype))
