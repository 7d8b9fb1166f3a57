"""Chunked cross-entropy (`nslm.losses.chunked_ce`): the same loss and gradients as torch's
F.linear + F.cross_entropy, without the [rows x V] logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from nslm.batch import IGNORE_INDEX
from nslm.errors import ConfigError
from nslm.losses import FullSoftmaxLoss, chunked_cross_entropy


def problem(rows: int, dim: int, vocab: int, padded: int = 0, bias: bool = True, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, dim, generator=gen, dtype=dtype).requires_grad_()
    weight = torch.randn(vocab, dim, generator=gen, dtype=dtype).requires_grad_()
    b = torch.randn(vocab, generator=gen, dtype=dtype).requires_grad_() if bias else None
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    targets[torch.randperm(rows, generator=gen)[:padded]] = IGNORE_INDEX
    return features, targets, weight, b


def loss_and_grads(loss_fn, features, targets, weight, bias):
    params = [p for p in (features, weight, bias) if p is not None]
    for p in params:
        p.grad = None
    loss = loss_fn(features, targets, weight, bias)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in params]


def reference(features, targets, weight, bias):
    return F.cross_entropy(F.linear(features, weight, bias), targets, ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize(
    ("rows", "dim", "vocab", "max_logits", "padded", "bias"),
    [
        (7, 5, 13, 7 * 4, 2, True),  # blocks of 4 columns: 13 is not a multiple
        (8, 6, 12, 8 * 3, 0, True),  # blocks of 3: divides 12
        (5, 3, 10, 1, 1, False),  # one column per block, no bias
        (16, 8, 50, 1 << 24, 3, True),  # a single block
        (33, 12, 101, 33 * 10, 5, False),  # blocks of 10 with a short last one
        (4, 6, 700, 4 * 300, 1, True),  # 300 columns rounded down to 256 (alignment): 256, 256, 188
    ],
)
def test_loss_and_gradients_equal_torch_cross_entropy(rows, dim, vocab, max_logits, padded, bias):
    inputs = problem(rows, dim, vocab, padded, bias)
    want_loss, want_grads = loss_and_grads(reference, *inputs)
    got_loss, got_grads = loss_and_grads(lambda *a: chunked_cross_entropy(*a, max_logits), *inputs)
    torch.testing.assert_close(got_loss, want_loss)
    for got, want in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_gradient_of_the_features_alone():
    """A frozen output layer: only the features' gradient is asked for."""
    features, targets, weight, bias = problem(9, 4, 40, padded=2)
    weight.requires_grad_(False)
    bias.requires_grad_(False)
    want = torch.autograd.grad(reference(features, targets, weight, bias), features)[0]
    got = torch.autograd.grad(chunked_cross_entropy(features, targets, weight, bias, 9 * 7), features)[0]
    torch.testing.assert_close(got, want)


def test_full_softmax_loss_chunked_and_plain_paths_agree():
    inputs = problem(40, 8, 300, padded=6)
    plain, chunked = FullSoftmaxLoss(chunked=False), FullSoftmaxLoss(chunked=True, max_logits_per_chunk=40 * 7)
    want_loss, want_grads = loss_and_grads(plain, *inputs)
    got_loss, got_grads = loss_and_grads(chunked, *inputs)
    torch.testing.assert_close(got_loss, want_loss)
    for got, want in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_full_softmax_loss_chunks_only_logits_over_the_bound():
    inputs = problem(10, 4, 30)
    assert "Chunked" in type(FullSoftmaxLoss(max_logits_per_chunk=299)(*inputs).grad_fn).__name__
    assert "Chunked" not in type(FullSoftmaxLoss(max_logits_per_chunk=300)(*inputs).grad_fn).__name__
    assert "Chunked" not in type(FullSoftmaxLoss(chunked=False, max_logits_per_chunk=1)(*inputs).grad_fn).__name__


def test_all_padded_gives_nan_loss_and_zero_gradients_like_torch():
    features, targets, weight, bias = problem(6, 4, 9)
    targets[:] = IGNORE_INDEX
    want_loss, want_grads = loss_and_grads(reference, features, targets, weight, bias)
    got_loss, got_grads = loss_and_grads(lambda *a: chunked_cross_entropy(*a, 12), features, targets, weight, bias)
    assert torch.isnan(want_loss) and torch.isnan(got_loss)
    for got, want in zip(got_grads, want_grads, strict=True):
        assert torch.equal(got, want) and not got.any()


def test_gradcheck_float64():
    features, targets, weight, bias = problem(6, 3, 7, padded=2, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda f, w, b: chunked_cross_entropy(f, targets, w, b, 6 * 2), (features, weight, bias)
    )


def test_bf16_autocast_matches_the_plain_path_under_the_same_autocast():
    inputs = problem(64, 32, 500, padded=4)

    def under_autocast(fn):
        def run(*args):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = fn(*args)
            assert loss.dtype == torch.float32  # log-sum-exp in fp32
            return loss  # backward runs outside autocast, as in training

        return run

    want_loss, want_grads = loss_and_grads(under_autocast(reference), *inputs)
    got_loss, got_grads = loss_and_grads(under_autocast(lambda *a: chunked_cross_entropy(*a, 64 * 96)), *inputs)
    assert not torch.equal(got_loss, reference(*inputs).detach())  # the matmuls really ran in bf16
    # bf16 rounding of the gradient matmuls' outputs differs between one matmul and one per block
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-3, atol=1e-3)
    for got, want, param in zip(got_grads, want_grads, (inputs[0], inputs[2], inputs[3]), strict=True):
        assert got.dtype == param.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-3)


def test_targets_outside_the_vocabulary_are_rejected_like_torch():
    features, targets, weight, bias = problem(4, 3, 5)
    targets[1] = 5
    with pytest.raises(RuntimeError):
        chunked_cross_entropy(features, targets, weight, bias)


def test_bad_chunk_size_is_a_config_error():
    with pytest.raises(ConfigError, match="max_logits_per_chunk"):
        FullSoftmaxLoss(max_logits_per_chunk=0)


def _events(nodes):
    for node in nodes:
        yield node
        yield from _events(node.children)


def peak_allocated_bytes(fn) -> int:
    """Peak of the bytes allocated (and not yet freed) while `fn` runs, from the CPU allocator's own
    allocation/free records as the profiler sees them: deterministic, unlike process RSS."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    tree = prof.profiler.kineto_results.experimental_event_tree()
    sizes = sorted(
        (e.start_time_ns, e.extra_fields.alloc_size) for e in _events(tree) if e.tag == _EventType.Allocation
    )
    live = peak = 0
    for _, size in sizes:
        live += size
        peak = max(peak, live)
    return peak


def test_chunked_forward_backward_peak_memory_stays_far_below_the_logit_matrix():
    rows, dim, vocab, max_logits = 512, 16, 20_000, 1 << 18
    features, targets, weight, bias = problem(rows, dim, vocab)
    logit_bytes = rows * vocab * 4

    def plain() -> None:
        reference(features, targets, weight, bias).backward()

    def chunked() -> None:
        chunked_cross_entropy(features, targets, weight, bias, max_logits).backward()

    # the control shows the measurement sees the logits: the plain path holds at least one [rows x V] copy
    assert peak_allocated_bytes(plain) >= logit_bytes
    for p in (features, weight, bias):
        p.grad = None
    peak = peak_allocated_bytes(chunked)
    gradients = (vocab * dim + vocab + rows * dim) * 4
    assert peak <= gradients + 4 * max_logits * 4  # the gradients plus a few blocks
    assert peak < logit_bytes / 8
