"""Each sampler draws from exactly the distribution it reports (chi-square, fixed seeds)."""

from __future__ import annotations

import math

import pytest
import torch

from nslm.samplers import InBatchSampler, LogUniformSampler, MixedSampler, UniformSampler, UnigramSampler
from nslm.samplers.base import log_expected_count

V = 50
COUNTS = [int(1000 / (rank + 1)) + (rank == 7) * 300 for rank in range(V - 1)] + [0]  # a never-seen id


def chi_square_p_value(observed: torch.Tensor, expected: torch.Tensor) -> float:
    keep = expected > 0
    statistic = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), statistic / 2.0))


SAMPLERS = {
    "uniform": lambda: UniformSampler(COUNTS),
    "unigram_1.0": lambda: UnigramSampler(COUNTS, alpha=1.0),
    "unigram_0.75": lambda: UnigramSampler(COUNTS, alpha=0.75),
    "log_uniform": lambda: LogUniformSampler(COUNTS),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_million_draws_match_the_reported_probabilities(name):
    torch.manual_seed(1234)
    sampler = SAMPLERS[name]()
    ids = torch.arange(V)
    q = sampler.log_prob(ids).double().exp()
    assert math.isclose(float(q.sum()), 1.0, rel_tol=1e-6)
    draws = sampler.draw(1_000_000, torch.device("cpu"))
    assert draws.min() >= 0 and draws.max() < V
    observed = torch.bincount(draws, minlength=V).double()
    assert chi_square_p_value(observed, 1_000_000 * q) > 1e-3
    # and the reported expected count of a draw of k with replacement is k * Q
    candidates = sampler.sample(64, torch.tensor([3, 4]))
    assert torch.allclose(candidates.log_expected.exp(), 64 * q[candidates.ids].float(), rtol=1e-5)


def test_unigram_follows_counts_to_the_power_alpha_and_never_gives_zero_probability():
    sampler = UnigramSampler(COUNTS, alpha=0.75)
    q = sampler.log_prob(torch.arange(V)).double().exp()
    weights = torch.tensor(COUNTS, dtype=torch.float64).clamp(min=1) ** 0.75
    assert torch.allclose(q, weights / weights.sum(), rtol=1e-6)
    assert q[-1] > 0


def test_log_uniform_is_tensorflows_formula():
    sampler = LogUniformSampler(list(range(1000)))
    k = torch.tensor([0, 1, 10, 999])
    expected = (torch.log(k + 2.0) - torch.log(k + 1.0)) / math.log(1001)
    assert torch.allclose(sampler.log_prob(k).exp(), expected.float())


def test_unique_draws_report_the_exact_expected_count():
    """P(id in a unique draw of k) ~ E[1 - (1-Q)^tries] (TF's formula), against 20k draws.

    The formula treats `tries` as fixed although the rejection loop's stopping time depends on what was
    drawn, so it is close but not exact: within 0.02 in absolute probability here."""
    torch.manual_seed(7)
    sampler = UnigramSampler(COUNTS, alpha=1.0)
    hits = torch.zeros(V, dtype=torch.float64)
    predicted = torch.zeros(V, dtype=torch.float64)
    rounds = 20_000
    all_ids = torch.arange(V)
    for _ in range(rounds):
        ids, tries = sampler.draw_unique(10, torch.device("cpu"))
        assert len(ids) == 10 and len(torch.unique(ids)) == 10
        hits[ids] += 1
        predicted += log_expected_count(sampler.log_prob(all_ids), tries, unique=True).double().exp()
    assert torch.allclose(hits / rounds, predicted / rounds, atol=0.02)


def test_unique_needs_k_at_most_v():
    with pytest.raises(ValueError, match="distinct"):
        UniformSampler(COUNTS).draw_unique(V + 1, torch.device("cpu"))


def test_in_batch_candidates_are_the_batch_targets_with_unigram_correction():
    sampler = InBatchSampler(COUNTS)
    targets = torch.tensor([3, 3, 9, 0, 9, 1])
    candidates = sampler.sample(0, targets)
    assert candidates.ids.tolist() == [0, 1, 3, 9]
    p = torch.tensor(COUNTS, dtype=torch.float64).clamp(min=1)
    p = p / p.sum()
    expected = 1 - (1 - p[candidates.ids]) ** len(targets)
    assert torch.allclose(candidates.log_expected.double().exp(), expected, rtol=1e-5)
    assert sampler.uses_batch


def test_mixed_adds_the_expected_counts_of_both_sources():
    torch.manual_seed(0)
    sampler = MixedSampler(COUNTS, base=lambda counts: UniformSampler(counts))
    targets = torch.tensor([3, 9])
    candidates = sampler.sample(5, targets)
    assert candidates.ids[:2].tolist() == [3, 9] and len(candidates.ids) == 7
    p = torch.tensor(COUNTS, dtype=torch.float64).clamp(min=1)
    p = p / p.sum()
    expected = (1 - (1 - p[candidates.ids]) ** 2) + 5 / V
    assert torch.allclose(candidates.log_expected.double().exp(), expected, rtol=1e-5)


def test_draws_happen_on_the_sampler_device_in_o_k_time():
    sampler = UnigramSampler(list(range(1, 1_000_001)))  # V = 1M: a table, built once
    assert sampler.draw(1024, torch.device("cpu")).shape == (1024,)
    assert LogUniformSampler([1] * 1_000_000).draw(8192, torch.device("cpu")).max() < 1_000_000


@pytest.mark.parametrize(("option", "second_source"), [("mixed", UniformSampler), ("mixed_unigram", UnigramSampler)])
def test_sampler_mixed_is_yang_et_al_in_batch_plus_uniform(tmp_path, option, second_source):
    """Yang et al. 2020 mix in-batch negatives with negatives drawn uniformly from the whole corpus."""
    from nslm.build import build_loss
    from tests.helpers import compose_train

    cfg = compose_train(["loss=sampled_softmax", f"sampler={option}"], tmp_path)
    sampler = build_loss(cfg, COUNTS).sampler
    assert isinstance(sampler, MixedSampler) and type(sampler.base) is second_source
