"""nslm-eval scores a checkpoint exactly, and refuses a corpus with another vocabulary."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from nslm.errors import NslmError
from nslm.eval import evaluate
from nslm.train import train
from nslm.utils.paths import config_dir

from .conftest import compose_train, tiny_overrides, write_corpus


def compose_eval(overrides: list[str], output_dir):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("eval", overrides=[f"paths.output_dir={output_dir}", *overrides])


def test_eval_reproduces_the_training_runs_test_ppl(tiny_corpus, tmp_path):
    trained = train(compose_train([*tiny_overrides(tiny_corpus), "trainer.max_epochs=1"], tmp_path / "run"))
    scored = evaluate(
        compose_eval(
            [f"ckpt_path={trained['best_checkpoint']}", "trainer.enable_progress_bar=false"], tmp_path / "eval"
        )
    )
    assert scored["test/ppl"] == pytest.approx(trained["test/ppl"], rel=1e-6)
    assert scored["val/ppl"] == pytest.approx(trained["val/ppl"], rel=1e-6)
    assert (tmp_path / "eval" / "results.json").is_file()


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
    assert not (tmp_path / "eval" / "results.json").exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(NslmError, match="does not exist"):
        evaluate(compose_eval([f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path / "eval"))
