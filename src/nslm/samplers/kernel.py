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

Cost per step (R rows, D features, k draws, r = min(rank, D), L = V / leaf_size leaves, leaf_size ~ r):
    observe  O(R D r + R r^2)                       project the features, form A
    draw     O(k r^2 (1 + log(L / k) + leaf_size))  tree descent + exact scoring inside the leaf
    log_prob O(n r^2) for n ids                     the k candidates and the R targets
all sublinear in V; plus a refresh every N = `refresh_every` steps, O(V D r + V r^2 + R D^2 + D^3)
(project W, rebuild the tree, eigendecompose M), O(V (D r + r^2) / N) amortised. Memory O(V r) float64: under
40 V r bytes at leaf_size = r (the snapshot [V, r] and the tree's r x r sums, one per leaf and inner node).
Never formed: [rows x V] scores, [V x D x D] features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from nslm.errors import ConfigError
from nslm.samplers.base import CandidateSampler
from nslm.samplers.kernel_tree import KernelSumTree


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
    ) -> None:
        """
        Args:
            counts: training word counts (only their number, V, is used: the proposal comes from the model).
            alpha: weight of the quadratic term; 0 gives the uniform proposal.
            rank: r, dimensions of the feature subspace the kernel is evaluated in; None: all D (exact M).
            leaf_size: words per leaf of the sum tree; None: max(8, r).
            refresh_every: steps between refreshes of the embedding snapshot, the subspace and the tree.
            uniform_mix: eps, the share of the uniform distribution mixed in (every Q >= eps / V).
        """
        super().__init__(counts)
        if not alpha >= 0:
            raise ConfigError(f"sampler.alpha must be >= 0, got {alpha}")
        if rank is not None and rank < 1:
            raise ConfigError(f"sampler.rank must be a positive integer or null (all dimensions), got {rank}")
        if leaf_size is not None and leaf_size < 1:
            raise ConfigError(f"sampler.leaf_size must be a positive integer or null (auto), got {leaf_size}")
        if refresh_every < 1:
            raise ConfigError(f"sampler.refresh_every must be a positive integer, got {refresh_every}")
        if not 0 <= uniform_mix <= 1:
            raise ConfigError(f"sampler.uniform_mix must be in [0, 1], got {uniform_mix}")
        self.alpha = float(alpha)
        self.rank = rank
        self.leaf_size = leaf_size if leaf_size is not None else max(8, rank or 8)
        self.refresh_every = refresh_every
        self.uniform_mix = float(uniform_mix)
        self.steps = 0  # observed batches; refresh when steps % refresh_every == 0
        # Plain attributes, not buffers: they live on the output embedding's device (rebuilt there if it
        # moves), are not checkpointed (rebuilt on the first step after a resume) and are never broadcast
        # by DDP (each rank's proposal follows its own batch; its counts are exact for that proposal).
        self.tree: KernelSumTree | None = None
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
        stale = self.tree is None or self.tree.z.device != weight.device or self.steps % self.refresh_every == 0
        if stale:
            self._refresh(features, weight.detach())
        projected = features if self.projection is None else features @ self.projection.t()
        rows = max(len(projected), 1)  # no valid row: A = 0, the uniform proposal
        self.matrix = projected.t() @ projected / rows
        self.steps += 1

    def _refresh(self, features: torch.Tensor, weight: torch.Tensor) -> None:
        dim = weight.shape[1]
        if self.rank is None or self.rank >= dim:
            self.projection = None
        else:
            # top-r eigenvectors of this batch's M: the best rank-r approximation of the kernel's matrix
            second_moment = features.t() @ features / max(len(features), 1)
            _, vectors = torch.linalg.eigh(second_moment)  # ascending eigenvalues
            self.projection = vectors[:, -self.rank :].t().contiguous()
        # projected at the embedding's precision (the O(V D r) part of a refresh); the stored z then define q
        # exactly, in float64, however they were rounded
        z = weight if self.projection is None else weight @ self.projection.t().to(weight.dtype)
        self.tree = KernelSumTree(z, self.leaf_size)

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
