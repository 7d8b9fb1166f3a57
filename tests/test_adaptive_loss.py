"""Adaptive softmax (`nslm.losses.AdaptiveSoftmaxLoss`): an exact normalised model, checked against torch's
own nn.AdaptiveLogSoftmaxWithLoss; default cutoffs from Zipfian count profiles; one-line config errors."""

from __future__ import annotations

import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

import nslm.losses.adaptive as adaptive_module
from nslm.batch import IGNORE_INDEX
from nslm.errors import ConfigError, user_error
from nslm.losses import AdaptiveSoftmaxLoss
from nslm.utils.paths import config_dir

VOCAB, DIM, CUTOFFS = 60, 16, [8, 25]


def zipf_counts(vocab: int, total: float = 1e9) -> list[int]:
    return [max(1, int(total / rank)) for rank in range(1, vocab + 1)]


def setup(rows: int = 40, padded: int = 0, seed: int = 0):
    torch.manual_seed(seed)
    loss = AdaptiveSoftmaxLoss(VOCAB, DIM, cutoffs=CUTOFFS)
    features = torch.randn(rows, DIM)
    targets = torch.randint(0, VOCAB, (rows,))
    targets[torch.randperm(rows)[:padded]] = IGNORE_INDEX
    return loss, features, targets


def torch_twin(loss: AdaptiveSoftmaxLoss) -> nn.AdaptiveLogSoftmaxWithLoss:
    """torch's module with the same cutoffs and weights: the reference."""
    twin = nn.AdaptiveLogSoftmaxWithLoss(DIM, VOCAB, CUTOFFS, div_value=4.0, head_bias=True)
    twin.load_state_dict(loss.adaptive.state_dict())
    return twin


def test_flags():
    assert AdaptiveSoftmaxLoss.exact and AdaptiveSoftmaxLoss.owns_output_layer
    assert not AdaptiveSoftmaxLoss.sparse_gradients


def test_log_probs_are_normalised_and_equal_torchs():
    loss, features, _ = setup()
    log_probs = loss.log_probs(features, None, None)
    assert log_probs.shape == (features.shape[0], VOCAB) and log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.double().exp().sum(1), torch.ones(features.shape[0], dtype=torch.float64))
    with torch.no_grad():
        torch.testing.assert_close(log_probs, torch_twin(loss).log_prob(features))


def test_token_nll_equals_the_full_distribution_and_torchs_own_loss():
    loss, features, targets = setup(padded=7)
    valid = targets != IGNORE_INDEX
    nll, log_z = loss.token_nll(features, targets, None, None)
    assert nll.dtype == torch.float32 and torch.equal(log_z, torch.zeros_like(nll))
    assert torch.equal(nll[~valid], torch.zeros(int((~valid).sum())))
    twin = torch_twin(loss)
    with torch.no_grad():
        from_full = -twin.log_prob(features[valid]).gather(1, targets[valid].unsqueeze(1)).squeeze(1)
        reference = twin(features[valid], targets[valid])
    torch.testing.assert_close(nll[valid], from_full)
    torch.testing.assert_close(nll[valid], -reference.output)
    torch.testing.assert_close(nll[valid].mean(), reference.loss)


def test_token_nll_in_small_chunks_is_the_same(monkeypatch):
    loss, features, targets = setup(rows=23, padded=3)
    whole, _ = loss.token_nll(features, targets, None, None)
    monkeypatch.setattr(adaptive_module, "MAX_LOGITS_PER_CHUNK", 1)  # one row at a time
    chunked, _ = loss.token_nll(features, targets, None, None)
    torch.testing.assert_close(chunked, whole)


def test_training_loss_ignores_padding_and_equals_torchs_loss_and_gradients():
    loss, features, targets = setup(padded=9)
    valid = targets != IGNORE_INDEX
    twin = torch_twin(loss)
    got = loss(features, targets, None, None)
    want = twin(features[valid], targets[valid]).loss
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    for (name, mine), theirs in zip(loss.adaptive.named_parameters(), twin.parameters(), strict=True):
        expected = theirs.grad if theirs.grad is not None else torch.zeros_like(theirs)
        torch.testing.assert_close(mine.grad, expected, msg=name)


def test_every_parameter_gets_a_gradient_when_all_targets_sit_in_the_head():
    """DDP with find_unused_parameters=False needs a gradient for every parameter on every step."""
    loss, features, _ = setup()
    targets = torch.randint(0, CUTOFFS[0], (features.shape[0],))
    loss(features, targets, None, None).backward()
    for name, param in loss.named_parameters():
        assert param.grad is not None, name
        if ".tail." in f".{name}":
            assert not param.grad.any(), name
    assert loss.adaptive.head.weight.grad.any()


def test_bf16_autocast_runs():
    loss, features, targets = setup(padded=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(features, targets, None, None)
        nll, _ = loss.token_nll(features, targets, None, None)
        log_probs = loss.log_probs(features, None, None)
    value.backward()
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(features.shape[0]))
    assert value.dtype == torch.float32 and torch.isfinite(value)
    valid = targets != IGNORE_INDEX
    torch.testing.assert_close(nll[valid].mean(), value.detach(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("vocab", [10_000, 1_000_000])
def test_default_cutoffs_on_a_zipf_profile_are_valid_and_put_most_mass_in_a_small_head(vocab):
    counts = zipf_counts(vocab)
    loss = AdaptiveSoftmaxLoss(vocab, 200, counts=counts)
    cutoffs = loss.cutoffs
    assert cutoffs == sorted(set(cutoffs)) and cutoffs[0] > 0 and cutoffs[-1] < vocab
    assert len(cutoffs) <= 3  # projections 200 / 4, / 16, / 64 keep at least one dimension
    total = sum(counts)
    head_share = sum(counts[: cutoffs[0]]) / total
    assert head_share >= 0.75  # most tokens are scored by the head alone
    assert cutoffs[0] <= vocab // 5  # ... which is a small part of the vocabulary


def test_default_cutoffs_for_tiny_vocabularies_and_narrow_features():
    assert AdaptiveSoftmaxLoss(2, 8).cutoffs == [1]
    for vocab in (3, 5, 17):
        cutoffs = AdaptiveSoftmaxLoss(vocab, 8, counts=[1] * vocab).cutoffs
        assert cutoffs == sorted(set(cutoffs)) and cutoffs[0] > 0 and cutoffs[-1] < vocab
    # 4 features / div_value 4 leave room for a single tail cluster (1 dimension)
    assert len(AdaptiveSoftmaxLoss(1000, 4, counts=zipf_counts(1000)).cutoffs) == 1
    assert len(AdaptiveSoftmaxLoss(1000, 4, counts=[0] * 1000).cutoffs) == 1  # no counts: a Zipf stand-in


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cutoffs": []}, "empty"),
        ({"cutoffs": [20, 10]}, "strictly increasing"),
        ({"cutoffs": [10, 10]}, "strictly increasing"),
        ({"cutoffs": [0, 10]}, "1..59"),
        ({"cutoffs": [10, 60]}, "1..59"),
        ({"cutoffs": [2.5]}, "whole numbers"),
        ({"cutoffs": [5, 10, 20, 40]}, "fewer cutoffs"),  # 16 / 4**3 = 0 dimensions
        ({"div_value": 0.5}, "div_value"),
        ({"div_value": 32.0}, "div_value"),
        ({"counts": [1, 2, 3]}, "3 word counts"),
        ({"vocab_size": 1}, "at least 2 words"),
        # values Hydra passes through as given (`loss.cutoffs=100`, `=abc`, `loss.init_range=-1`)
        ({"cutoffs": 100}, r"must be a list of increasing ids, e\.g\. \[2000, 10000\], or null .* got 100$"),
        ({"cutoffs": "abc"}, "must be a list of increasing ids.* got 'abc'$"),
        ({"cutoffs": [float("inf")]}, "whole numbers"),
        ({"cutoffs": [True]}, "whole numbers"),
        ({"init_range": -1}, "init_range must be a number > 0.* got -1$"),
        ({"init_range": 0}, "init_range must be a number > 0"),
        ({"init_range": float("nan")}, "init_range must be a number > 0"),
        ({"init_range": "abc"}, "init_range must be a number > 0"),
        ({"div_value": "abc"}, "div_value must be a number >= 1"),
    ],
)
def test_bad_settings_are_one_line_config_errors(kwargs, message):
    args = {"vocab_size": VOCAB, "in_features": DIM, **kwargs}
    with pytest.raises(ConfigError, match=message) as info:
        AdaptiveSoftmaxLoss(**args)
    assert "\n" not in str(info.value)


def test_a_positive_init_range_draws_every_parameter_from_the_range():
    loss = AdaptiveSoftmaxLoss(VOCAB, DIM, cutoffs=CUTOFFS, init_range=0.05)
    values = torch.cat([parameter.detach().flatten() for parameter in loss.adaptive.parameters()])
    assert values.abs().max() <= 0.05 and values.abs().max() > 0.04  # thousands of draws fill the range


def test_loss_config_builds_the_objective():
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["loss=adaptive"])
    loss = instantiate(cfg.loss, _partial_=True)(vocab_size=VOCAB, in_features=DIM, counts=zipf_counts(VOCAB))
    assert isinstance(loss, AdaptiveSoftmaxLoss)
    assert loss.adaptive.head.bias is not None and loss.adaptive.div_value == 4.0


@pytest.mark.parametrize(
    ("override", "message"),
    [("loss.cutoffs=100", "got 100$"), ("loss.cutoffs=abc", "got 'abc'$"), ("loss.init_range=-1", "got -1$")],
)
def test_bad_overrides_are_one_line_config_errors_through_hydra(override, message):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["loss=adaptive", override])
    with pytest.raises(Exception) as info:  # Hydra may wrap it; the CLI prints the ConfigError behind
        instantiate(cfg.loss, _partial_=True)(vocab_size=VOCAB, in_features=DIM, counts=zipf_counts(VOCAB))
    cause = user_error(info.value)
    assert isinstance(cause, ConfigError), info.value
    assert "\n" not in str(cause) and re.search(message, str(cause)), cause
