"""Optimisers for the tables that get sparse gradients, beside the user's optimiser for the rest.

A sampled loss gives the output embedding a sparse gradient over the rows a step used (so does the input
embedding with `model.net.sparse_embedding=true`). torch's own optimisers handle that badly: SGD takes a
sparse gradient only without momentum and weight decay (weight decay fails with `add(sparse, dense)`, and
its momentum buffer is an uncoalesced sparse tensor that grows every step), Adam refuses it. nslm splits
the parameters instead:

    dense parameters (LSTM, output bias)     the configured optimiser, unchanged (torch.optim.SGD/Adam/AdamW)
    sparse tables                            SGD  -> LazySGD (momentum, dampening, nesterov, weight decay)
                                             Adam -> torch.optim.SparseAdam (+ lazy L2 or decoupled decay)

Lazy: momentum, Adam's moments and weight decay act on the rows present in a step's gradient only, as
TensorFlow's and Keras' optimisers do for embedding `IndexedSlices`. A row that no step touches keeps its
value (it does not decay) and its momentum until it is used again; a row touched at every step is updated
exactly as the dense optimiser would update it (tested against torch.optim.SGD / Adam). The state is one
dense buffer the size of the table for momentum (two for Adam), allocated once: it never grows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from nslm.errors import ConfigError


class LazySGD(Optimizer):
    """SGD with momentum and weight decay applied lazily to the rows of sparse gradients (dense gradients,
    e.g. of a tied table, get plain torch.optim.SGD semantics). The momentum buffer starts at zero for
    every row, which equals torch's first step (buffer = gradient) when `dampening=0`."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ConfigError(f"SGD needs lr, momentum, weight_decay >= 0; got {lr}, {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ConfigError("SGD nesterov=true needs momentum > 0 and dampening = 0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    grad = grad.coalesce()  # one entry per row: rows are distinct below
                    rows, values = grad._indices()[0], grad._values()
                else:
                    rows, values = None, grad
                self._update(param, rows, values, group)
        return loss

    def _update(self, param: torch.Tensor, rows: torch.Tensor | None, grad: torch.Tensor, group: dict) -> None:
        current = param if rows is None else param[rows]
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * current
        momentum = group["momentum"]
        if momentum:
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            buffer = state["momentum_buffer"]
            moved = (buffer if rows is None else buffer[rows]).mul(momentum).add_(grad, alpha=1 - group["dampening"])
            if rows is None:
                buffer.copy_(moved)
            else:
                buffer[rows] = moved
            grad = grad.add(moved, alpha=momentum) if group["nesterov"] else moved
        if rows is None:
            param.add_(grad, alpha=-group["lr"])
        else:
            param.index_add_(0, rows, grad, alpha=-group["lr"])


class LazyAdam(torch.optim.SparseAdam):
    """torch.optim.SparseAdam plus weight decay on the rows of the step: L2 (added to the gradient, as
    torch.optim.Adam does) or decoupled (AdamW: the rows shrink by lr x weight_decay)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled: bool = False, maximize: bool = False) -> None:  # fmt: skip
        if weight_decay < 0:
            raise ConfigError(f"Adam needs weight_decay >= 0, got {weight_decay}")
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, maximize=maximize)
        for group in self.param_groups:
            group["weight_decay"], group["decoupled"] = weight_decay, decoupled

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and not param.grad.is_sparse:
                    # a dense gradient (finish_exact switched to exact softmax): every row, as Adam would
                    param.grad = param.grad.to_sparse(sparse_dim=1)
            if not group["weight_decay"]:
                continue
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad = param.grad.coalesce()
                rows = grad._indices()[0]
                if group["decoupled"]:
                    param[rows] = param[rows] * (1 - group["lr"] * group["weight_decay"])
                else:
                    direction = -1.0 if group["maximize"] else 1.0  # the decay always pulls towards 0
                    grad._values().add_(param[rows], alpha=direction * group["weight_decay"])
        super().step()
        return loss


class _StateView(MutableMapping):
    """`optimizer.state` of a CombinedOptimizer: each parameter's state lives in its own optimiser."""

    def __init__(self, optimizers: list[Optimizer]) -> None:
        self._optimizers = optimizers

    def _owner(self, param: torch.Tensor) -> Optimizer:
        for optimizer in self._optimizers:
            if any(param is p for group in optimizer.param_groups for p in group["params"]):
                return optimizer
        raise KeyError(param)

    def __getitem__(self, param):
        return self._owner(param).state[param]

    def __setitem__(self, param, value) -> None:
        self._owner(param).state[param] = value

    def __delitem__(self, param) -> None:
        del self._owner(param).state[param]

    def __iter__(self) -> Iterator:
        return (param for optimizer in self._optimizers for param in optimizer.state)

    def __len__(self) -> int:
        return sum(len(optimizer.state) for optimizer in self._optimizers)


class CombinedOptimizer(Optimizer):
    """Optimisers over disjoint parameters, stepped as one, so Lightning's automatic optimisation, lr
    schedulers and checkpoints see a single optimiser. `param_groups` are the children's own group dicts:
    a scheduler that sets a group's lr sets the child's."""

    def __init__(self, optimizers: list[Optimizer]) -> None:
        self.optimizers = optimizers
        super().__init__([{"params": []}], {})  # Optimizer's hooks and bookkeeping; groups come from children
        self.param_groups = [group for optimizer in optimizers for group in optimizer.param_groups]

    @property
    def state(self) -> MutableMapping:  # type: ignore[override]
        return _StateView(self.optimizers)

    @state.setter
    def state(self, value) -> None:  # Optimizer.__init__ assigns an empty dict; the children own the state
        pass

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("optimizers")
        if not isinstance(states, list) or len(states) != len(self.optimizers):
            raise ConfigError(
                "the checkpoint's optimizer state is not this run's (dense + sparse-table optimisers); resume "
                "with the same loss, sparse_embedding and optimizer settings, or start afresh with resume=false"
            )
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)
        # load_state_dict replaces each child's group dicts: point ours at the new ones
        self.param_groups = [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def __repr__(self) -> str:
        return f"CombinedOptimizer({', '.join(type(optimizer).__name__ for optimizer in self.optimizers)})"


_SGD_OPTIONS = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
_ADAM_OPTIONS = ("lr", "betas", "eps", "weight_decay", "maximize")


def _factory_parts(factory: Callable[..., Optimizer]) -> tuple[Any, dict[str, Any]]:
    if isinstance(factory, functools.partial):
        return factory.func, dict(factory.keywords)
    return factory, {}


def build_optimizer(
    factory: Callable[..., Optimizer], named_params: list[tuple[str, nn.Parameter]], sparse: list[nn.Parameter]
) -> Optimizer:
    """The configured optimiser (`factory`, a Hydra partial taking `params`) over the dense parameters,
    combined with a lazy optimiser of the same kind over the `sparse` tables (see the module doc)."""
    sparse_ids = {id(param) for param in sparse}
    dense = [param for _, param in named_params if id(param) not in sparse_ids]
    if not sparse:
        return factory(params=dense)
    kind, options = _factory_parts(factory)
    names = ", ".join(name for name, param in named_params if id(param) in sparse_ids)
    if kind is torch.optim.SGD:
        table_optimizer: Optimizer = LazySGD(sparse, **{k: v for k, v in options.items() if k in _SGD_OPTIONS})
    elif kind in (torch.optim.Adam, torch.optim.AdamW):
        if options.get("amsgrad"):
            raise ConfigError(
                f"Adam amsgrad=true has no lazy (sparse-row) form for {names}; set model.optimizer.amsgrad=false"
            )
        adam = {k: v for k, v in options.items() if k in _ADAM_OPTIONS}
        if kind is torch.optim.AdamW:
            adam.setdefault("weight_decay", 0.01)  # AdamW's own default
        table_optimizer = LazyAdam(sparse, decoupled=kind is torch.optim.AdamW, **adam)
    else:
        name = getattr(kind, "__name__", str(kind))
        raise ConfigError(
            f"{name} cannot update the sparse-gradient tables ({names}); use model/optimizer=sgd or "
            "model/optimizer=adam (lazy updates of the rows a step touches), or make every gradient dense with "
            "loss.sparse_gradients=false model.net.sparse_embedding=false"
        )
    if not dense:
        return table_optimizer
    return CombinedOptimizer([factory(params=dense), table_optimizer])
