"""loss=adaptive end to end: it trains, is evaluated exactly under its own normalised distribution,
reloads for nslm-eval and nslm-generate, and refuses what it cannot do."""

from __future__ import annotations

import math

import pytest
import torch

from nslm.checkpoint import checkpoint_vocabulary, module_from_checkpoint, read_checkpoint
from nslm.errors import ConfigError, user_error
from nslm.eval import evaluate
from nslm.generate import generate
from nslm.train import train
from tests.helpers import compose_eval, compose_train, tiny_overrides, unigram_ppl


def test_adaptive_trains_evaluates_reloads_and_generates(tiny_corpus, tmp_path):
    cfg = compose_train(
        [*tiny_overrides(tiny_corpus), "loss=adaptive", "loss.cutoffs=[10,30]", "trainer.max_epochs=2", "logger=[]"],
        tmp_path / "run",
    )
    results = train(cfg)
    assert results["config"]["model"]["net"]["output_layer"] is False  # the objective owns the output layer
    best = min(record["val/ppl"] for record in results["history"])
    assert best < 1.15 * unigram_ppl(tiny_corpus)

    checkpoint = read_checkpoint(results["best_checkpoint"])
    module = module_from_checkpoint(checkpoint, checkpoint_vocabulary(checkpoint))
    assert module.net.output_weight is None and module.loss.cutoffs == [10, 30]
    # its evaluation distribution is normalised over the whole vocabulary
    features, _ = module.net(torch.tensor([[3], [7]]))
    log_probs = module.loss.log_probs(features.reshape(-1, features.shape[-1]), None, None)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2), atol=1e-5)

    scored = evaluate(compose_eval([f"ckpt_path={results['best_checkpoint']}"], tmp_path / "eval"))
    assert scored["test/ppl"] == pytest.approx(results["test/ppl"], rel=1e-6)

    vocab = checkpoint_vocabulary(checkpoint)
    words = generate(module.net, vocab, "w1 w2", num_words=20, seed=3, objective=module.loss)
    assert len(words) == 20 and words == generate(module.net, vocab, "w1 w2", 20, seed=3, objective=module.loss)
    greedy = generate(module.net, vocab, "w1", num_words=1, top_k=1, objective=module.loss)[0]
    last, _ = module.net(torch.tensor([[vocab.stoi["w1"]]]))
    assert greedy == vocab.itos[int(module.loss.log_probs(last[-1], None, None).argmax())]
    assert math.isfinite(scored["val/ppl"])


def test_adaptive_has_no_output_embedding_to_tie(tiny_corpus, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_corpus), "loss=adaptive", "model.net.tie_weights=true"], tmp_path)
    with pytest.raises(Exception) as caught:  # raised inside Hydra's instantiate, which wraps it
        train(cfg)
    cause = user_error(caught.value)  # what nslm-train prints as its one line
    assert isinstance(cause, ConfigError) and "tie_weights=true needs the network's output embedding" in str(cause)
