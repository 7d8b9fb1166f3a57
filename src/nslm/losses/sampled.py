"""Shared machinery of the sampled objectives: draw candidates, score only their rows, correct, mask hits.

Per step this touches the target rows and the k candidate rows of the output embedding, never all V:
rows are gathered with `F.embedding(..., sparse=True)`, so the output embedding's gradient is a sparse
tensor over those rows and SGD updates only them (the bias, V floats, keeps a dense gradient). Scores are

    s(w) = h · W[w] + b[w]                          (no V-wide logit matrix is ever formed)
    s(w) - log E(w)                                 with the logQ correction (E: expected count, see samplers)

and a candidate equal to a row's target (an "accidental hit") is removed from that row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nslm.batch import IGNORE_INDEX
from nslm.errors import ConfigError
from nslm.losses.base import OutputObjective
from nslm.samplers.base import CandidateSampler


@dataclass
class SampledScores:
    target: torch.Tensor  # [rows]
    candidates: torch.Tensor  # [rows, k]
    hits: torch.Tensor  # [rows, k] bool: candidate == target (excluded)
    weight: torch.Tensor  # [rows] 1 for real targets, 0 for padding


def at_least_fp32(scores: torch.Tensor) -> torch.Tensor:
    """Losses are computed in fp32 (or fp64 when given): -inf masks and log-sum-exp stay exact under autocast."""
    return scores if scores.dtype in (torch.float32, torch.float64) else scores.float()


def gather_rows(ids: torch.Tensor, table: torch.Tensor, sparse: bool) -> torch.Tensor:
    return F.embedding(ids, table, sparse=sparse)


class SampledLoss(OutputObjective):
    """Base class of the sampled objectives; subclasses turn `SampledScores` into a loss."""

    exact = False  # the training loss is not the NLL: no train/ppl is reported
    correct_by_default = True
    #: TF: sampled_softmax_loss removes accidental hits, nce_loss keeps them (NCE's estimator needs them)
    removes_hits_by_default = True

    def __init__(
        self,
        sampler: CandidateSampler,
        num_negatives: int = 1024,
        unique: bool = False,
        shared_negatives: bool = True,
        remove_accidental_hits: bool | None = None,
        correct_bias: bool | None = None,
        sparse_gradients: bool = True,
    ) -> None:
        """
        Args:
            num_negatives: k, candidates drawn per step (shared) or per row.
            unique: draw k distinct ids (rejection, TF's `unique=True`) instead of k i.i.d. draws.
            shared_negatives: one candidate set for the whole batch (one GEMM) or k per row.
            remove_accidental_hits: drop a candidate equal to the row's target. Default: on for sampled
                softmax and NEG (word2vec skips them), off for NCE (TF's nce_loss) except with in-batch and
                mixed samplers, whose candidates contain every row's target by construction.
            correct_bias: subtract log expected count. Default: on for sampled softmax and NCE; for NEG only
                with in-batch/mixed samplers.
            sparse_gradients: gradient of the output embedding as a sparse tensor over the rows used.
        """
        super().__init__()
        if num_negatives < 1:
            raise ConfigError(f"loss.num_negatives must be a positive integer, got {num_negatives}")
        if unique and shared_negatives and num_negatives > sampler.vocab_size and not sampler.uses_batch:
            raise ConfigError(
                f"loss.num_negatives={num_negatives} distinct ids cannot be drawn from a vocabulary of "
                f"{sampler.vocab_size}; lower it or set loss.unique=false"
            )
        self.sampler = sampler
        self.num_negatives = num_negatives
        self.unique = unique
        self.shared_negatives = shared_negatives
        # A batch-derived candidate set (in-batch, mixed) holds each row's own target with certainty, not by
        # an accidental draw: scoring it as noise is wrong for every objective, NCE's TF semantics included.
        self.remove_accidental_hits = (
            remove_accidental_hits
            if remove_accidental_hits is not None
            else (self.removes_hits_by_default or sampler.uses_batch)
        )
        self.correct_bias = (
            correct_bias if correct_bias is not None else (self.correct_by_default or sampler.uses_batch)
        )
        self.sparse_gradients = sparse_gradients

    def _sample(self, targets: torch.Tensor, valid: torch.Tensor):
        if not self.sampler.uses_batch or bool(valid.all()):
            return self.sampler.sample(self.num_negatives, targets, unique=self.unique, shared=self.shared_negatives)
        # Padded rows (the split's last window only) must not become in-batch candidates.
        candidates = self.sampler.sample(
            self.num_negatives, targets[valid], unique=self.unique, shared=self.shared_negatives
        )
        target_log_expected = candidates.target_log_expected.new_zeros(targets.shape)
        target_log_expected[valid] = candidates.target_log_expected
        candidates.target_log_expected = target_log_expected
        return candidates

    def scores(
        self, features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> SampledScores:
        valid = targets != IGNORE_INDEX
        safe_targets = targets.masked_fill(~valid, 0)
        if self.sampler.follows_model:  # this step's proposal follows this batch; padding rows zeroed (no sync)
            self.sampler.observe(features.detach() * valid.unsqueeze(-1).to(features.dtype), weight.detach())
        candidates = self._sample(safe_targets, valid)
        sparse = self.sparse_gradients
        target_scores = (features * gather_rows(safe_targets, weight, sparse)).sum(-1)
        candidate_rows = gather_rows(candidates.ids, weight, sparse)
        if candidates.ids.dim() == 1:  # shared: one [rows, D] x [D, k] GEMM
            candidate_scores = features @ candidate_rows.t()
        else:  # per row: [rows, k, D] x [rows, D, 1]
            candidate_scores = torch.bmm(candidate_rows, features.unsqueeze(-1)).squeeze(-1)
        if bias is not None:  # V floats: a dense gradient costs no more than the rows above
            target_scores = target_scores + bias[safe_targets]
            candidate_scores = candidate_scores + bias[candidates.ids]
        if self.correct_bias:
            target_scores = target_scores - candidates.target_log_expected.to(target_scores.dtype)
            candidate_scores = candidate_scores - candidates.log_expected.to(candidate_scores.dtype)
        ids = candidates.ids if candidates.ids.dim() == 2 else candidates.ids.unsqueeze(0)
        if self.remove_accidental_hits:
            hits = ids == safe_targets.unsqueeze(-1)
        else:
            hits = torch.zeros_like(candidate_scores, dtype=torch.bool)
        return SampledScores(target_scores, candidate_scores, hits, valid.to(features.dtype))

    def objective(self, scores: SampledScores) -> torch.Tensor:
        """Per-row loss [rows]."""
        raise NotImplementedError

    def forward(
        self, features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        scores = self.scores(features, targets, weight, bias)
        per_row = self.objective(scores)
        return (per_row * scores.weight).sum() / scores.weight.sum().clamp(min=1)
