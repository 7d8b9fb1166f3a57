"""A proposal that follows the model: quadratic-kernel sampling (Blanc & Rendle 2018, "Adaptive Sampled
Softmax with Kernel Based Sampling").

Sampled softmax is unbiased only when the proposal is the model's own distribution. Blanc & Rendle sample
from K(h, w) = 1 + alpha * (h . w)^2, which grows with the score as exp(h . w) does (but symmetrically:
a strongly negative score draws mass too) and is linear in the features vec(w w^T), so sums over sets of
words can be precomputed. nslm shares one draw of k negatives by the whole batch, so
the proposal is the batch's mixture of kernels, in a rank-r subspace and with a lazily refreshed copy
of the output embedding:

    q(w) = (1 - eps) * kappa(w) / sum_v kappa(v) + eps / V
    kappa(w) = 1 + alpha * z_w^T A z_w          z_w = P W_s[w]   [r]
                                                A   = P M P^T    [r, r],  M = (1/R) sum_rows h h^T

- M: this step's context features (R rows, detached; `SampledLoss` zeroes the padding rows of a split's
  last window rather than dropping them, which would cost a host sync), so q moves with every batch;
- W_s, P: the output embedding and the top-r eigenvectors of M ([r, D], orthonormal rows) as they were
  at the last refresh, every `refresh_every` steps (P = identity when rank >= D). They define q
  exactly: no word is scored against a stale normaliser, so the logQ correction stays right;
- eps = `uniform_mix`: a floor under every word's probability whatever the kernel does.

Drawing descends a sum tree over leaves of consecutive ids (`kernel_tree`), exactly: every id drawn and
every target gets its exact probability q (up to float64 rounding), E = k * q with replacement.

State and resuming: the step counter, P, the snapshot z = W_s P^T [V, r] (in the embedding's dtype) and A
are the module's extra state (`get_extra_state`), so Lightning checkpoints carry them (plain tensors, ints
and None: they load with torch.load(weights_only=True)) and a resumed run refreshes at the same steps,
from the same snapshot, as an uninterrupted one. The tree is a deterministic function of z and leaf_size:
it is rebuilt on load, not stored. A checkpoint written before nslm saved this state still loads (strict
loading too); its sampler starts afresh and refreshes at the next step, with a warning.

DDP: every rank observes at the same step, so at a refresh each rank all-reduces its D x D second moment
and takes P from the mean over ranks: P and z (from the synchronised embedding) are the same on every rank
and a checkpoint saved by rank 0 restores every rank exactly. A stays this rank's own batch, and each
rank's draws and logQ correction use its own q, exactly.

Cost per step (R rows, D features, k draws, r = min(rank, D), L = V / leaf_size leaves, leaf_size ~ r):
    observe  O(R D r + R r^2)                       project the features, form A
    draw     O(k r^2 (1 + log(L / k) + leaf_size))  tree descent + exact scoring inside the leaf
    log_prob O(n r^2) for n ids                     the k candidates and the R targets
all sublinear in V; plus a refresh every N = `refresh_every` steps, O(V D r + V r^2 + R D^2 + D^3)
(project W, rebuild the tree, eigendecompose M; under DDP one all-reduce of D^2 float64),
O(V (D r + r^2) / N) amortised. Memory O(V r): under 40 V r bytes at leaf_size = r (the snapshot [V, r] in
the embedding's dtype and the tree's float64 r x r sums, one per leaf and inner node). A checkpoint grows by
the snapshot, V r values of the embedding's dtype. Never formed: [rows x V] scores, [V x D x D] features.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from nslm.distributed.collectives import is_distributed
from nslm.errors import ConfigError
from nslm.samplers.base import CandidateSampler
from nslm.samplers.kernel_tree import KernelSumTree
from nslm.utils.checks import is_finite_number, is_whole_number

log = logging.getLogger(__name__)

#: the state_dict key torch gives a module's extra state (torch.nn.modules.module._EXTRA_STATE_KEY_SUFFIX)
EXTRA_STATE_KEY = "_extra_state"
STATE_FIELDS = ("steps", "projection", "snapshot", "matrix")


def _whole(name: str, value: Any, null: str = "") -> int:
    """A positive integer option (bool is an int to Python, never a size here); `null`: what None would mean."""
    if not is_whole_number(value) or value < 1:
        or_null = f" or null ({null})" if null else ""
        raise ConfigError(f"sampler.{name} must be a positive integer{or_null}, got {value!r}")
    return int(value)


def _real(name: str, value: Any, low: float, high: float, meaning: str) -> float:
    """A finite number in [low, high] (inf/nan would reach the probabilities as nan)."""
    if not (is_finite_number(value) and low <= value <= high):
        raise ConfigError(f"sampler.{name} must be a finite number {meaning}, got {value!r}")
    return float(value)


class QuadraticKernelSampler(CandidateSampler):
    follows_model = True

    def __init__(
        self,
        counts: Sequence[int] | torch.Tensor,
        alpha: float = 100.0,
        rank: int | None = 16,
        leaf_size: int | None = None,
        refresh_every: int = 20,
        uniform_mix: float = 0.05,
        cross_device: bool = False,
    ) -> None:
        """
        Args:
            counts: training word counts (only their number, V, is used: the proposal comes from the model).
            alpha: weight of the quadratic term; 0 gives the uniform proposal.
            rank: r, dimensions of the feature subspace the kernel is evaluated in; None: all D (exact M).
            leaf_size: words per leaf of the sum tree; None: max(8, r).
            refresh_every: steps between refreshes of the embedding snapshot, the subspace and the tree.
            uniform_mix: eps, the share of the uniform distribution mixed in (every Q >= eps / V).
            cross_device: accepted so that the in-batch samplers' option gives a clear error: must be false.
        """
        super().__init__(counts)
        if cross_device:
            raise ConfigError(
                "sampler.cross_device is an option of the in-batch samplers (in_batch, mixed); the kernel sampler "
                "draws on each rank from its own batch's proposal (subspace and snapshot shared by all ranks): "
                "remove sampler.cross_device"
            )
        self.alpha = _real("alpha", alpha, 0.0, math.inf, ">= 0 (0: the uniform proposal)")
        self.rank = None if rank is None else _whole("rank", rank, null="all dimensions")
        auto_leaf = max(8, self.rank or 8)
        self.leaf_size = auto_leaf if leaf_size is None else _whole("leaf_size", leaf_size, null="auto")
        self.refresh_every = _whole("refresh_every", refresh_every)
        self.uniform_mix = _real("uniform_mix", uniform_mix, 0.0, 1.0, "in [0, 1]")
        # Plain attributes, saved and restored as the module's extra state (see the module docstring). They
        # live on the output embedding's device: moved there (not refreshed) when it differs, e.g. on resume.
        self.steps = 0  # observed batches; refresh when steps % refresh_every == 0
        self.tree: KernelSumTree | None = None  # over the snapshot z [V, r] (tree.z)
        self.projection: torch.Tensor | None = None  # P [r, D] float64, or None: identity
        self.matrix: torch.Tensor | None = None  # A [r, r] float64

    # ---- following the model ---------------------------------------------------------------------
    def observe(self, features: torch.Tensor, weight: torch.Tensor) -> None:
        """Set A from this batch's features [R, D]; refresh P, W_s and the tree every `refresh_every` calls."""
        if weight.shape[0] != self.vocab_size:
            raise ConfigError(
                f"the kernel sampler was built for {self.vocab_size} words but the output embedding has "
                f"{weight.shape[0]} rows: build the sampler on the model's vocabulary"
            )
        features = features.detach().reshape(-1, features.shape[-1]).double()
        # a function of the step count alone: under DDP every rank refreshes (and all-reduces) together
        if self.tree is None or self.steps % self.refresh_every == 0:
            self._refresh(features, weight.detach())
        elif self.tree.z.device != weight.device:
            self._move_to(weight.device)
        projected = features if self.projection is None else features @ self.projection.t()
        rows = max(len(projected), 1)  # no valid row: A = 0, the uniform proposal
        self.matrix = projected.t() @ projected / rows
        self.steps += 1

    def _refresh(self, features: torch.Tensor, weight: torch.Tensor) -> None:
        dim = weight.shape[1]
        if self.rank is None or self.rank >= dim:
            self.projection = None
            z = weight.clone()  # a snapshot: the optimizer updates the embedding in place
        else:
            # top-r eigenvectors of M: the best rank-r approximation of the kernel's matrix
            second_moment = features.t() @ features / max(len(features), 1)
            if is_distributed():  # the mean over ranks: the same P (and z) on every rank
                dist.all_reduce(second_moment)
                second_moment /= dist.get_world_size()
            _, vectors = torch.linalg.eigh(second_moment)  # ascending eigenvalues
            self.projection = vectors[:, -self.rank :].t().contiguous()
            # projected at the embedding's precision (the O(V D r) part of a refresh); the stored z then
            # define q exactly, in float64, however they were rounded
            z = weight @ self.projection.t().to(weight.dtype)
        self.tree = KernelSumTree(z, self.leaf_size)

    def _move_to(self, device: torch.device) -> None:
        """The same state on `device`; the tree is rebuilt there from the same z (bit-identical to one built
        there at the refresh: the build is deterministic)."""
        assert self.tree is not None
        self.tree = KernelSumTree(self.tree.z.to(device), self.leaf_size)
        self.projection = None if self.projection is None else self.projection.to(device)
        self.matrix = None if self.matrix is None else self.matrix.to(device)

    # ---- checkpoints -----------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        """Steps, P, the snapshot z and A: tensors, an int and None (weights_only-loadable)."""
        snapshot = None if self.tree is None else self.tree.z
        return {"steps": self.steps, "projection": self.projection, "snapshot": snapshot, "matrix": self.matrix}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or any(field not in state for field in STATE_FIELDS):
            raise ConfigError(
                f"the checkpoint's kernel sampler state is not {list(STATE_FIELDS)}: "
                "use a checkpoint this version of nslm wrote"
            )
        snapshot = state["snapshot"]
        if snapshot is not None and snapshot.shape[0] != self.vocab_size:
            raise ConfigError(
                f"the checkpoint's kernel sampler covers {snapshot.shape[0]} words, this model {self.vocab_size}: "
                "resume on the vocabulary the checkpoint was trained on"
            )
        self.steps = int(state["steps"])
        self.projection, self.matrix = state["projection"], state["matrix"]
        # rebuilt where the tensors were loaded (the CPU for Lightning); moved to the embedding at the next step
        self.tree = None if snapshot is None else KernelSumTree(snapshot, self.leaf_size)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        key = prefix + EXTRA_STATE_KEY
        if strict and key not in state_dict:
            # a checkpoint from before the sampler saved its state: load it as those versions resumed,
            # from a fresh proposal, rather than refuse it as a strict load would
            missing_keys.remove(key)
            self.steps, self.tree, self.projection, self.matrix = 0, None, None, None
            log.warning(
                "the checkpoint holds no kernel sampler state (written by an older nslm): the proposal restarts "
                "from the next step, so this run will not match an uninterrupted one exactly"
            )

    # ---- the proposal ----------------------------------------------------------------------------
    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        """log q(id) for any ids (uniform before the first `observe`); O(len(ids) r^2)."""
        uniform = -math.log(self.vocab_size)
        if self.tree is None:
            return torch.full(ids.shape, uniform, dtype=torch.float32, device=ids.device)
        matrix = self.matrix
        kernel = self.tree.weights(ids.to(self.tree.z.device), matrix, self.alpha)
        kernel = kernel / self.tree.root_mass(matrix, self.alpha)
        q = (1.0 - self.uniform_mix) * kernel + self.uniform_mix / self.vocab_size
        return q.log().float().to(ids.device)

    def draw(self, num: int, device: torch.device) -> torch.Tensor:
        if self.tree is None:
            return torch.randint(self.vocab_size, (num,), device=device)
        tree_device = self.tree.z.device
        ids = self.tree.draw(num, self.matrix, self.alpha)
        if self.uniform_mix > 0:  # each draw independently from the uniform part with probability eps
            from_uniform = torch.rand(num, device=tree_device) < self.uniform_mix
            ids = torch.where(from_uniform, torch.randint(self.vocab_size, (num,), device=tree_device), ids)
        return ids.to(device)
