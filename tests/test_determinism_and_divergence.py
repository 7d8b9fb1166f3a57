"""Same seed and config: bit-identical losses. A loss that turns NaN stops training with a clear message."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from hydra.utils import instantiate

from nslm.build import build_module
from tests.helpers import RecordLosses, compose_train, run_train_cli, tiny_overrides


def first_50_losses(corpus, tmp_path, name, extra):
    cfg = compose_train(
        [*tiny_overrides(corpus), "trainer.max_epochs=1", "trainer.limit_train_batches=50", "logger=[]", *extra],
        tmp_path / name,
    )
    pl.seed_everything(cfg.seed, workers=True)  # as nslm-train does, before anything is built
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule.vocab)
    recorder = RecordLosses()
    trainer = instantiate(cfg.trainer, callbacks=[recorder], logger=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    return recorder.losses


@pytest.mark.parametrize("objective", [[], ["loss=sampled_softmax", "loss.num_negatives=8", "model.net.dropout=0.3"]])
def test_same_seed_and_config_give_bit_identical_first_50_losses(tiny_corpus, tmp_path, objective):
    first = first_50_losses(tiny_corpus, tmp_path, "a", objective)
    second = first_50_losses(tiny_corpus, tmp_path, "b", objective)
    assert len(first) == 50
    assert first == second  # exact float equality, step by step
    assert first != first_50_losses(tiny_corpus, tmp_path, "c", [*objective, "seed=7"])


def test_a_nan_loss_stops_training_naming_the_step_and_the_last_good_checkpoint(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    done = run_train_cli(
        *tiny_overrides(tiny_corpus),
        "trainer.max_epochs=3",
        "logger=[]",
        "callbacks.step_checkpoint.every_n_train_steps=10",
        "+callbacks.poison._target_=tests.helpers.PoisonLossAtStep",
        "+callbacks.poison.step=25",
        f"hydra.run.dir={run}",
        "print_config=false",
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("nslm-train: error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "training loss became nan at step 25 (epoch 0)" in errors[0]
    assert f"the last good checkpoint is {run / 'checkpoints' / 'last-step.ckpt'}" in errors[0]
    assert "Traceback" not in done.stderr
