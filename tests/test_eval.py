"""nslm-eval scores a checkpoint exactly, and refuses a corpus with another vocabulary."""

from __future__ import annotations

import pytest

from nslm.errors import NslmError
from nslm.eval import evaluate
from nslm.train import train
from tests.helpers import compose_eval, compose_train, tiny_overrides, write_corpus


def test_eval_reproduces_the_training_runs_test_ppl(tiny_corpus, tmp_path):
    trained = train(compose_train([*tiny_overrides(tiny_corpus), "trainer.max_epochs=1"], tmp_path / "run"))
    scored = evaluate(
        compose_eval(
            [f"ckpt_path={trained['best_checkpoint']}", "trainer.enable_progress_bar=false"], tmp_path / "eval"
        )
    )
    assert scored["test/ppl"] == pytest.approx(trained["test/ppl"], rel=1e-6)
    assert scored["val/ppl"] == pytest.approx(trained["val/ppl"], rel=1e-6)
    assert (tmp_path / "eval" / "eval.json").is_file() and not (tmp_path / "eval" / "results.json").exists()


def test_eval_refuses_a_corpus_with_another_vocabulary(tiny_corpus, tmp_path):
    trained = train(
        compose_train(
            [*tiny_overrides(tiny_corpus), "trainer.max_epochs=1", "trainer.limit_train_batches=2"], tmp_path / "run"
        )
    )
    other = write_corpus(tmp_path / "other", vocab=80, seed=3)
    data = [o for o in tiny_overrides(other) if o.startswith("data")]
    with pytest.raises(NslmError, match="vocabulary"):
        evaluate(compose_eval([f"ckpt_path={trained['best_checkpoint']}", *data], tmp_path / "eval"))
    assert not (tmp_path / "eval" / "eval.json").exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(NslmError, match="does not exist"):
        evaluate(compose_eval([f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path / "eval"))
