"""The ruler: exact perplexity of a split, overall and by word frequency, reduced exactly under DDP.

A split's perplexity is exp(sum of token NLL / number of target tokens) over the whole split: the sums are
torchmetrics states summed over ranks (never a mean of batch or rank perplexities). A NaN or infinite
token NLL is kept in the sum, so the split's perplexity comes out NaN or inf: a diverged model is never
averaged away (torchmetrics' MeanMetric would drop NaN values by default).

Frequency buckets (Jozefowicz et al. 2016 break perplexity down the same way, since sampled objectives
lose mostly on rare words): the vocabulary minus `<unk>` is cut, most frequent words first, into
at most `num_buckets` (B) groups of about equal training-token mass; `<unk>` is a bucket of its own.
B is an upper bound: a word holding more than 1/B of the mass fills several buckets' worth on its own,
and the buckets it would leave empty are dropped, so the non-empty buckets are numbered consecutively
0..n-1 (n <= B) and an empty bucket is never listed. Bucket b's perplexity is exp(mean NLL of the
targets that fall in it). Names: `val/ppl_bucket_0` (the most frequent words) ... `val/ppl_bucket_<n-1>`
(the rarest), `val/ppl_bucket_unk`; the same under `test/`.

The sums are float64 whatever the trainer's precision: bf16-true converts the whole LightningModule with
`.to(torch.bfloat16)`, and torchmetrics applies that to metric states too, so `SplitPerplexity` (and
`Float64Mean`) move float64 states by device only (`Float64States`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.nn import Module
from torchmetrics import MeanMetric, Metric

from nslm.batch import IGNORE_INDEX


def frequency_buckets(counts: Sequence[int], unk_id: int, num_buckets: int) -> torch.Tensor:
    """bucket index of every word id [V]: 0..n-1 (n <= num_buckets) by equal training-token mass (frequent
    first), n for `<unk>`. A word starts bucket floor(B x tokens of the more frequent words / total); a
    word holding more than 1/B of the mass makes the next start skip numbers, so the buckets in use are
    renumbered consecutively. Words never seen in training go to the rarest bucket of the seen words."""
    counts_t = torch.as_tensor(list(counts), dtype=torch.float64)
    order = torch.argsort(counts_t, descending=True, stable=True)
    order = order[order != unk_id]
    mass = counts_t[order]
    before = torch.cumsum(mass, 0) - mass  # training tokens of the more frequent words
    total = float(mass.sum())
    bucket_in_order = (before * num_buckets / max(total, 1.0)).floor().clamp(max=num_buckets - 1).long()
    seen = mass > 0
    # unseen words sort last, so they join the last seen word's bucket rather than opening one of their own
    bucket_in_order[~seen] = int(bucket_in_order[seen].max()) if bool(seen.any()) else 0
    # consecutive numbering: the rank of each bucket index among those in use (sorted, so order is kept)
    used, bucket_in_order = torch.unique(bucket_in_order, sorted=True, return_inverse=True)
    bucket_of = torch.empty(len(counts_t), dtype=torch.long)
    bucket_of[order] = bucket_in_order
    bucket_of[unk_id] = len(used)
    return bucket_of


def bucket_names(num_buckets: int) -> list[str]:
    return [f"bucket_{index}" for index in range(num_buckets)] + ["bucket_unk"]


def describe_buckets(counts: Sequence[int], bucket_of: torch.Tensor) -> list[dict]:
    """What each bucket holds: its words and their share of training tokens (for results.json)."""
    counts_t = torch.as_tensor(list(counts), dtype=torch.float64)
    total = float(counts_t.sum()) or 1.0
    names = bucket_names(int(bucket_of.max()))
    return [
        {
            "bucket": name,
            "words": int((bucket_of == index).sum()),
            "train_token_share": float(counts_t[bucket_of == index].sum()) / total,
        }
        for index, name in enumerate(names)
    ]


class Float64States(Metric):
    """A metric whose float64 states stay float64 whatever the module's precision: Lightning's bf16-true
    and 16-true call `module.to(dtype)`, which torchmetrics applies to metric states, and a bf16 sum both
    breaks `index_add_` of float64 values and rounds a split's NLL to 3 significant digits. The states
    still follow the module's device."""

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = ()) -> Module:
        pinned = [
            key
            for key, value in getattr(self, "_defaults", {}).items()
            if isinstance(value, torch.Tensor) and value.dtype == torch.float64 and key not in exclude_state
        ]
        this = super()._apply(fn, exclude_state=(*exclude_state, *pinned))
        for key in pinned:  # `this.device` already follows `fn`
            this._defaults[key] = this._defaults[key].to(device=this.device, dtype=torch.float64)
            setattr(this, key, getattr(this, key).to(device=this.device, dtype=torch.float64))
        if pinned:  # torchmetrics casts update() inputs to `dtype` (MeanMetric does)
            this._dtype = torch.float64
        return this


class Float64Mean(Float64States, MeanMetric):
    """torchmetrics' MeanMetric accumulated in float64 under any trainer precision."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.set_dtype(torch.float64)


class SplitPerplexity(Float64States):
    """Sums of token NLL and token counts, in total and per frequency bucket (float64, summed over ranks)."""

    full_state_update = False

    def __init__(self, bucket_of: torch.Tensor, by_bucket: bool = True) -> None:
        """`bucket_of`: the bucket of every word id (`frequency_buckets`); `by_bucket=False`: the split's
        figure only (`bucket_of` then only sizes the table)."""
        super().__init__()
        self.by_bucket = by_bucket
        self.num_slots = int(bucket_of.max()) + 1
        self.register_buffer("bucket_of", bucket_of.clone(), persistent=False)
        self.add_state("nll_sum", torch.zeros(self.num_slots, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", torch.zeros(self.num_slots, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nll: torch.Tensor, targets: torch.Tensor) -> None:
        valid = targets != IGNORE_INDEX
        slots = self.bucket_of.to(targets.device)[targets[valid]]
        self.nll_sum.index_add_(0, slots, nll[valid].to(torch.float64))  # NaN/inf stay in the sum
        self.tokens.index_add_(0, slots, torch.ones_like(slots, dtype=torch.float64))

    def compute(self) -> dict[str, float]:
        """{"loss": mean NLL, "ppl": ..., "ppl_bucket_<b>": ...}; a bucket without tokens is left out."""
        total_tokens = float(self.tokens.sum())
        mean = float(self.nll_sum.sum()) / total_tokens if total_tokens else float("nan")
        values = {"loss": mean, "ppl": _exp(mean)}
        if not self.by_bucket:
            return values
        for name, nll, tokens in zip(bucket_names(self.num_slots - 1), self.nll_sum, self.tokens, strict=True):
            if tokens > 0:
                values[f"ppl_{name}"] = _exp(float(nll) / float(tokens))
        return values


def _exp(value: float) -> float:
    if math.isnan(value):
        return value
    return math.exp(value) if value < 709 else float("inf")
