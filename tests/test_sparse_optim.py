"""Optimisers for the sparse tables: lazy SGD momentum / weight decay and SparseAdam, checked against
torch's dense optimisers, bounded over thousands of steps, and wired into real training."""

from __future__ import annotations

import functools
import statistics
import time

import pytest
import torch

from nslm.errors import ConfigError
from nslm.optim import CombinedOptimizer, LazySGD, build_optimizer
from nslm.optim.sparse import LazyAdam
from nslm.train import train
from tests.helpers import compose_train, tiny_overrides, unigram_ppl

V, D = 50, 4


def as_sparse(dense: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The rows `rows` of a dense gradient as a sparse one, split into two uncoalesced halves as
    F.embedding's backward produces them (a row may appear twice)."""
    values = dense[rows]
    twice = torch.cat([rows, rows])
    return torch.sparse_coo_tensor(twice.unsqueeze(0), torch.cat([values * 0.25, values * 0.75]), dense.shape)


def run_pair(make_lazy, make_reference, steps: int = 25, rows: torch.Tensor | None = None):
    """Apply the same gradients to a lazy optimiser (sparse) and a torch one (dense); return both params."""
    torch.manual_seed(0)
    start = torch.randn(V, D)
    lazy_param = torch.nn.Parameter(start.clone())
    dense_param = torch.nn.Parameter(start.clone())
    lazy, reference = make_lazy([lazy_param]), make_reference([dense_param])
    every_row = torch.arange(V)
    for _ in range(steps):
        grad = torch.randn(V, D)
        touched = every_row if rows is None else rows
        lazy_param.grad = as_sparse(grad, touched)
        dense_grad = torch.zeros_like(grad)
        dense_grad[touched] = grad[touched]
        dense_param.grad = dense_grad
        lazy.step()
        reference.step()
    return lazy_param.detach(), dense_param.detach()


@pytest.mark.parametrize(
    "options",
    [
        {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        {"lr": 0.1, "weight_decay": 0.05},
        {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.01, "maximize": True},
    ],
)
def test_lazy_sgd_equals_torch_sgd_on_rows_every_step_touches(options):
    lazy, dense = run_pair(lambda p: LazySGD(p, **options), lambda p: torch.optim.SGD(p, **options))
    torch.testing.assert_close(lazy, dense, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("lazy_options", "reference"),
    [
        ({"lr": 0.01}, functools.partial(torch.optim.Adam, lr=0.01)),
        ({"lr": 0.01, "weight_decay": 0.1}, functools.partial(torch.optim.Adam, lr=0.01, weight_decay=0.1)),
        (
            {"lr": 0.01, "weight_decay": 0.1, "decoupled": True},
            functools.partial(torch.optim.AdamW, lr=0.01, weight_decay=0.1),
        ),
    ],
)
def test_lazy_adam_equals_torch_adam_on_rows_every_step_touches(lazy_options, reference):
    lazy, dense = run_pair(lambda p: LazyAdam(p, **lazy_options), reference)
    torch.testing.assert_close(lazy, dense, rtol=1e-5, atol=1e-6)


def test_rows_a_step_does_not_touch_keep_their_value_and_momentum():
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(V, D))
    optimizer = LazySGD([param], lr=0.1, momentum=0.9, weight_decay=0.1)
    param.grad = as_sparse(torch.ones(V, D), torch.tensor([3, 7]))
    optimizer.step()
    after_first = param.detach().clone()
    buffer = optimizer.state[param]["momentum_buffer"].clone()
    param.grad = as_sparse(torch.ones(V, D), torch.tensor([7]))
    optimizer.step()
    assert torch.equal(param[3], after_first[3])  # not touched: no decay, no momentum step
    assert torch.equal(optimizer.state[param]["momentum_buffer"][3], buffer[3])
    assert not torch.equal(param[7], after_first[7])


def _momentum_state_numel(optimizer: torch.optim.Optimizer, param) -> int:
    buffer = optimizer.state[param]["momentum_buffer"]
    return buffer._nnz() * D if buffer.is_sparse else buffer.numel()


def test_torch_sgd_momentum_on_sparse_gradients_grows_and_lazy_sgd_stays_bounded():
    """The failure this replaces (torch's sparse momentum buffer is never coalesced), then 5,000 steps of
    the lazy optimisers: state size constant, step time flat."""
    torch.manual_seed(0)
    vocab = 1000

    def steps(optimizer, param, count: int, momentum_sizes: bool = False) -> tuple[list[int], list[float]]:
        sizes, durations = [], []
        for _ in range(count):
            param.grad = as_sparse(torch.randn(vocab, D), torch.randint(0, vocab, (40,)))
            started = time.perf_counter()
            optimizer.step()
            durations.append(time.perf_counter() - started)
            if momentum_sizes:
                sizes.append(_momentum_state_numel(optimizer, param))
        return sizes, durations

    torch_param = torch.nn.Parameter(torch.randn(vocab, D))
    torch_sizes, _ = steps(torch.optim.SGD([torch_param], lr=0.01, momentum=0.9), torch_param, 400, True)
    assert torch_sizes[-1] > 5 * torch_sizes[49]  # torch's buffer keeps growing (issue: 3,134 -> 24,151 nnz)

    for make in (
        lambda p: LazySGD(p, lr=0.01, momentum=0.9, weight_decay=1e-4),
        lambda p: LazyAdam(p, lr=0.001, weight_decay=1e-4),
    ):
        param = torch.nn.Parameter(torch.randn(vocab, D))
        optimizer = make([param])
        _, durations = steps(optimizer, param, 5000)
        state = sum(t.numel() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
        assert state <= 2 * vocab * D + 1  # momentum (SGD) or two moments + a step count (Adam): fixed
        early, late = statistics.median(durations[100:600]), statistics.median(durations[-500:])
        assert late < 3 * early, (early, late)  # a growing state would make late steps many times slower


def test_combined_optimizer_is_one_optimizer_to_schedulers_and_checkpoints():
    dense, table = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(V, D))
    factory = functools.partial(torch.optim.SGD, lr=1.0, momentum=0.9)
    optimizer = build_optimizer(factory, [("dense", dense), ("table", table)], [table])
    assert isinstance(optimizer, CombinedOptimizer) and len(optimizer.param_groups) == 2
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5**epoch)
    dense.grad, table.grad = torch.ones(3), as_sparse(torch.ones(V, D), torch.tensor([1, 2]))
    optimizer.step()
    scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == [0.5, 0.5]
    assert [child.param_groups[0]["lr"] for child in optimizer.optimizers] == [0.5, 0.5]
    saved = optimizer.state_dict()
    restored = build_optimizer(factory, [("dense", dense), ("table", table)], [table])
    restored.load_state_dict(saved)
    assert torch.equal(restored.state[table]["momentum_buffer"], optimizer.state[table]["momentum_buffer"])
    assert restored.param_groups[1]["lr"] == 0.5


def test_an_optimizer_without_a_lazy_form_is_refused_in_one_line():
    table = torch.nn.Parameter(torch.randn(V, D))
    with pytest.raises(ConfigError, match=r"RMSprop cannot update the sparse-gradient tables .*model/optimizer=sgd"):
        build_optimizer(functools.partial(torch.optim.RMSprop, lr=0.1), [("net.decoder.weight", table)], [table])


@pytest.mark.parametrize(
    "optimizer",
    [
        ["model/optimizer=adam", "model.optimizer.lr=0.01"],
        ["model/optimizer=adam", "model.optimizer.lr=0.01", "model.optimizer.weight_decay=1e-5"],
        ["model.optimizer.momentum=0.9", "model.optimizer.weight_decay=1e-5", "model.optimizer.lr=0.5"],
    ],
)
def test_sampled_training_with_the_optimizers_users_reach_for(tiny_corpus, tmp_path, optimizer):
    cfg = compose_train(
        [
            *tiny_overrides(tiny_corpus),
            "loss=sampled_softmax",
            "loss.num_negatives=16",
            "model.net.sparse_embedding=true",
            "trainer.max_epochs=2",
            "logger=[]",
            "callbacks=none",
            *optimizer,
        ],
        tmp_path,
    )
    results = train(cfg)
    # the tiny corpus is i.i.d. Zipf words: the best a model can do is about the unigram model's ppl (23.8
    # here), uniform guessing over 50 words is 50
    best = min(record["val/ppl"] for record in results["history"])
    assert best < 1.15 * unigram_ppl(tiny_corpus), best
