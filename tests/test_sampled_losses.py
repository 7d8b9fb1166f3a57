"""The sampled objectives: exact in the limit, unbiased only with the correction, hits excluded, and
NCE / NEG equal to a hand computation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from nslm.batch import IGNORE_INDEX
from nslm.losses import NCELoss, NegativeSamplingLoss, SampledSoftmaxLoss
from nslm.samplers import UniformSampler, UnigramSampler
from nslm.samplers.base import Candidates, CandidateSampler


class FixedSampler(CandidateSampler):
    """Returns given ids with given probabilities Q (expected count k*Q, with replacement)."""

    def __init__(self, vocab_size: int, ids: list[int], q: list[float]) -> None:
        super().__init__([1] * vocab_size)
        self.ids = torch.tensor(ids)
        self.q = torch.tensor(q)

    def log_prob(self, ids):
        table = torch.full((self.vocab_size,), 1.0 / self.vocab_size)
        table[self.ids] = self.q
        return table[ids].log()

    def sample(self, num, targets, unique=False, shared=True):
        k = len(self.ids)
        return Candidates(
            self.ids, self.log_prob(self.ids) + math.log(k), self.log_prob(targets) + math.log(k), tries=k, unique=False
        )


def problem(rows=6, vocab=12, dim=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    weight = torch.randn(vocab, dim, generator=generator, dtype=torch.float64)
    bias = torch.randn(vocab, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    return features, weight, bias, targets


def test_all_ids_as_negatives_without_correction_is_the_exact_cross_entropy():
    features, weight, bias, targets = problem()
    every_id = FixedSampler(12, list(range(12)), [1 / 12] * 12)
    loss = SampledSoftmaxLoss(every_id, num_negatives=12, correct_bias=False, sparse_gradients=False)
    exact = F.cross_entropy(features @ weight.T + bias, targets)
    assert torch.allclose(loss(features, targets, weight, bias), exact)


def test_accidental_hits_never_contribute():
    features, weight, bias, targets = problem()
    targets = torch.full_like(targets, 4)
    with_hit = FixedSampler(12, [1, 4, 7], [0.1, 0.3, 0.1])
    without = FixedSampler(12, [1, 7], [0.1, 0.1])
    for cls in (SampledSoftmaxLoss, NCELoss, NegativeSamplingLoss):
        options = {"sparse_gradients": False, "correct_bias": False, "remove_accidental_hits": True}
        a = cls(with_hit, 3, **options)(features, targets, weight, bias)
        b = cls(without, 2, **options)(features, targets, weight, bias)
        assert torch.allclose(a, b), cls.__name__


def test_hits_are_removed_by_default_as_tensorflow_and_word2vec_do_except_for_nce():
    sampler = UniformSampler([1] * 10)
    assert SampledSoftmaxLoss(sampler, 3).remove_accidental_hits  # TF sampled_softmax_loss: True
    assert not NCELoss(sampler, 3).remove_accidental_hits  # TF nce_loss: remove_accidental_hits=False
    assert NegativeSamplingLoss(sampler, 3).remove_accidental_hits  # word2vec.c: `if (target == word) continue`


def test_nce_never_scores_a_rows_own_target_as_noise_with_batch_candidates():
    # In-batch candidates hold every row's target by construction (not an accidental draw): NCE's
    # "keep hits" (TF, for drawn noise) would push each target down as its own noise sample.
    from nslm.samplers import InBatchSampler, MixedSampler

    counts = [1] * 10
    assert NCELoss(InBatchSampler(counts), 3).remove_accidental_hits
    assert NCELoss(MixedSampler(counts, UniformSampler(counts)), 3).remove_accidental_hits
    assert not NCELoss(InBatchSampler(counts), 3, remove_accidental_hits=False).remove_accidental_hits
    # by hand: batch targets [2, 5, 2, 7] -> candidates {2, 5, 7}; row r's noise terms are the others
    torch.manual_seed(0)
    features, weight = torch.randn(4, 6), torch.randn(10, 6)
    targets = torch.tensor([2, 5, 2, 7])
    loss = NCELoss(InBatchSampler(counts), 3, correct_bias=False, sparse_gradients=False)
    got = loss(features, targets, weight, None)
    per_row = []
    for row, target in enumerate(targets.tolist()):
        scores = {w: float(features[row] @ weight[w]) for w in (2, 5, 7)}
        noise = sum(math.log1p(math.exp(s)) for w, s in scores.items() if w != target)
        per_row.append(math.log1p(math.exp(-scores[target])) + noise)
    assert got.item() == pytest.approx(sum(per_row) / len(per_row), rel=1e-5)


def test_padded_targets_are_ignored():
    features, weight, bias, targets = problem()
    sampler = FixedSampler(12, [1, 2, 3], [0.1, 0.1, 0.1])
    loss = SampledSoftmaxLoss(sampler, 3, sparse_gradients=False)
    padded = targets.clone()
    padded[[1, 4]] = IGNORE_INDEX
    keep = torch.tensor([0, 2, 3, 5])
    assert torch.allclose(loss(features, padded, weight, bias), loss(features[keep], targets[keep], weight, bias))


def hand_logistic(features, weight, bias, targets, ids, q, k, correct, skip_hits):
    total = 0.0
    for row in range(len(targets)):
        t = int(targets[row])
        s = float(features[row] @ weight[t] + bias[t]) - (math.log(k * q[t]) if correct else 0.0)
        row_loss = -math.log(1 / (1 + math.exp(-s)))
        for j in ids:
            if j == t and skip_hits:
                continue
            s_j = float(features[row] @ weight[j] + bias[j]) - (math.log(k * q[j]) if correct else 0.0)
            row_loss += -math.log(1 - 1 / (1 + math.exp(-s_j)))
        total += row_loss
    return total / len(targets)


@pytest.mark.parametrize("cls,correct,skip_hits", [(NCELoss, True, False), (NegativeSamplingLoss, False, True)])
def test_nce_and_neg_match_a_hand_computation(cls, correct, skip_hits):
    features, weight, bias, targets = problem(seed=3)
    ids, probs = [0, 2, 5, 9], [0.2, 0.05, 0.1, 0.01]
    targets[:2] = torch.tensor([2, 9])  # rows whose target is also drawn as noise
    sampler = FixedSampler(12, ids, probs)
    loss = cls(sampler, len(ids), sparse_gradients=False)
    assert loss.correct_bias is correct
    q = {i: float(sampler.log_prob(torch.tensor(i)).exp()) for i in range(12)}
    expected = hand_logistic(features, weight, bias, targets, ids, q, len(ids), correct, skip_hits)
    assert float(loss(features, targets, weight, bias)) == pytest.approx(expected, rel=1e-7)  # fp32 log Q


TRUE_P = [0.6, 0.2, 0.1, 0.05, 0.05]  # the next-word distribution of a single context
K = 20  # uniform noise over 5 words: k Q(w) = 4


def fit_free_scores(loss_cls, remove_hits: bool) -> torch.Tensor:
    """exp(s) after fitting one free score per word (bias-free, 1-d features of ones) to data drawn from
    TRUE_P, with uniform noise and per-row negatives so that each step averages many noise draws."""
    torch.manual_seed(0)
    vocab = len(TRUE_P)
    loss = loss_cls(
        UniformSampler([1] * vocab),
        K,
        sparse_gradients=False,
        shared_negatives=False,
        remove_accidental_hits=remove_hits,
    )
    scores = torch.nn.Parameter(torch.full((vocab, 1), -math.log(vocab)))
    optimizer = torch.optim.Adam([scores], lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < 500 else 0.1)
    ones = torch.ones(1024, 1)
    for _ in range(900):
        targets = torch.multinomial(torch.tensor(TRUE_P), len(ones), replacement=True)
        optimizer.zero_grad()
        loss(ones, targets, scores, None).backward()
        optimizer.step()
        schedule.step()
    return scores.detach().squeeze(1).exp()


# The optima, derived by hand: per word w the expected objective is
#   p(w) log sigmoid(u) + k Q(w) c(w) log sigmoid(-u),  u = s - log(k Q) for NCE (u = s for NEG),
# where c(w) = 1 with hits kept and 1 - p(w) with hits removed (w's noise draws on rows whose target is w
# are dropped). Setting the derivative to 0: exp(u) = p / (k Q c).
OPTIMA = {
    ("nce", False): lambda p: p,  # NCE (TF nce_loss): the normalised distribution
    ("nce", True): lambda p: p / (1 - p),  # hits removed: the log-odds, sum 1.97 here
    ("neg", False): lambda p: p / (K / len(TRUE_P)),  # word2vec NEG: p / (k Q)
    ("neg", True): lambda p: p / (K / len(TRUE_P) * (1 - p)),  # NEG's default (word2vec skips hits)
}


@pytest.mark.parametrize(("name", "remove_hits"), list(OPTIMA))
def test_logistic_objectives_converge_to_their_derived_optimum(name, remove_hits):
    found = fit_free_scores({"nce": NCELoss, "neg": NegativeSamplingLoss}[name], remove_hits)
    expected = OPTIMA[(name, remove_hits)](torch.tensor(TRUE_P))
    assert torch.allclose(found, expected, rtol=0.05), (found.tolist(), expected.tolist())
    if name == "nce" and not remove_hits:  # NCE is self-normalising only with hits kept
        assert float(found.sum()) == pytest.approx(1.0, abs=0.02)
    if name == "nce" and remove_hits:
        assert float(found.sum()) > 1.9


def test_nce_starts_self_normalised():
    bias = torch.zeros(1000)
    NCELoss(UnigramSampler([1] * 1000), 10).initialize_output_layer(bias)
    assert torch.allclose(bias, torch.full((1000,), -math.log(1000)))


def gradient_bias(correct: bool, k: int, repeats: int = 200) -> float:
    """|| E[sampled-softmax gradient] - exact gradient || / || exact gradient || w.r.t. the features.

    The expectation is estimated in one pass: the 16 rows are repeated `repeats` times, each copy with
    its own k draws (per-row negatives), and the loss' mean over copies differentiates to the mean
    gradient."""
    torch.manual_seed(0)
    vocab = 200
    features, weight, bias, targets = problem(rows=16, vocab=vocab, dim=8, seed=11)
    counts = [int(5000 / (r + 1) ** 1.2) + 1 for r in range(vocab)]
    sampler = UnigramSampler(counts, alpha=1.0)
    x = features.clone().requires_grad_()
    F.cross_entropy(x @ weight.T + bias, targets).backward()
    exact = x.grad.clone()
    x.grad = None
    loss = SampledSoftmaxLoss(sampler, k, correct_bias=correct, shared_negatives=False, sparse_gradients=False)
    loss(x.repeat(repeats, 1), targets.repeat(repeats), weight, bias).backward()
    return float((x.grad - exact).norm() / exact.norm())


def test_corrected_gradient_bias_shrinks_with_k_and_uncorrected_does_not():
    """Skewed (unigram, alpha=1) proposal, V=200. Measured: corrected 0.45, 0.31, 0.11, 0.008 at
    k = 16, 128, 1024, 8192; uncorrected 0.44, 0.36, 0.24, 0.21 (it levels off at the proposal's bias)."""
    ks = [16, 128, 1024, 8192]
    corrected = [gradient_bias(True, k) for k in ks]
    uncorrected = [gradient_bias(False, k) for k in ks]
    assert all(b < a for a, b in itertools.pairwise(corrected)), corrected
    assert corrected[-1] < 0.03, corrected
    assert uncorrected[-1] > 0.15 and uncorrected[-1] > 0.75 * uncorrected[-2], uncorrected


def test_sparse_gradients_touch_only_the_used_rows():
    torch.manual_seed(0)
    features = torch.randn(4, 6)
    weight = torch.nn.Parameter(torch.randn(1000, 6))
    bias = torch.nn.Parameter(torch.zeros(1000))
    loss = SampledSoftmaxLoss(FixedSampler(1000, [10, 20, 30], [0.01, 0.01, 0.01]), 3)
    loss(features, torch.tensor([1, 2, 3, 2]), weight, bias).backward()
    assert weight.grad.is_sparse
    before = weight.detach().clone()
    torch.optim.SGD([weight, bias], lr=1.0).step()
    changed = (weight.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [1, 2, 3, 10, 20, 30]


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="num_negatives"):
        SampledSoftmaxLoss(UnigramSampler([1] * 10), num_negatives=0)
    with pytest.raises(ValueError, match="distinct ids cannot be drawn"):
        SampledSoftmaxLoss(UnigramSampler([1] * 10), num_negatives=11, unique=True)
