"""finish_exact: sampled epochs, then exact softmax for the last ones, in one run with one record; the
switch is in the history, survives a resume, and works with the lazy optimisers."""

from __future__ import annotations

import json

import pytest
import torch

from nslm.errors import ConfigError
from nslm.losses import FullSoftmaxLoss
from nslm.train import train
from tests.helpers import compose_train, run_train_cli, tiny_overrides

SAMPLED = ["loss=sampled_softmax", "loss.num_negatives=8", "model.net.sparse_embedding=true", "logger=[]"]


@pytest.mark.parametrize("optimizer", [[], ["model/optimizer=adam", "model.optimizer.lr=0.01"]], ids=["sgd", "adam"])
def test_the_last_epochs_train_with_exact_softmax(tiny_corpus, tmp_path, optimizer):
    cfg = compose_train(
        [*tiny_overrides(tiny_corpus), *SAMPLED, *optimizer, "trainer.max_epochs=3", "finish_exact.epochs=1"], tmp_path
    )
    results = train(cfg)
    assert [record["objective"] for record in results["history"]] == ["sampled_softmax", "sampled_softmax", "full"]
    assert results["status"] == "completed" and results["epochs"] == 3
    assert results["history"][-1]["val/ppl"] < results["history"][0]["val/ppl"]


def test_the_exact_epochs_take_the_exact_gradient(tiny_corpus, tmp_path):
    """After the switch the output embedding gets F.cross_entropy's dense gradient (the reference)."""
    from hydra.utils import instantiate

    from nslm.build import build_module
    from nslm.callbacks import FinishExact

    cfg = compose_train(
        [*tiny_overrides(tiny_corpus), *SAMPLED, "trainer.max_epochs=2", "model.net.dropout=0"], tmp_path
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    module = build_module(cfg, datamodule.vocab)
    switch = FinishExact(epochs=1)

    class Trainer:  # the two attributes the callback reads
        max_epochs, current_epoch = 2, 1

    switch.setup(Trainer, module, "fit")
    switch.on_train_epoch_start(Trainer, module)
    assert isinstance(module.loss, FullSoftmaxLoss)
    window = datamodule.dataset("train", 4).window(0)
    features, _ = module.net(window.inputs)
    features = features.reshape(-1, features.shape[-1])
    module.loss(features, window.targets.reshape(-1), module.net.output_weight, module.net.output_bias).backward()
    ours = module.net.output_weight.grad.clone()
    module.zero_grad()
    features, _ = module.net(window.inputs)
    logits = features.reshape(-1, features.shape[-1]) @ module.net.output_weight.T + module.net.output_bias
    torch.nn.functional.cross_entropy(logits, window.targets.reshape(-1)).backward()
    assert not ours.is_sparse and torch.allclose(ours, module.net.output_weight.grad, atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["finish_exact.epochs=3"], "leaves no sampled epoch"),
        (["finish_exact.epochs=1", "finish_exact.fraction=0.5"], "give one of finish_exact.epochs"),
        (["finish_exact.fraction=1.5"], "must be in \\(0, 1\\)"),
        (["finish_exact.epochs=1", "loss=adaptive"], "switches a sampled objective"),
        (["finish_exact.epochs=1", "loss=full"], "switches a sampled objective"),  # (was a silent no-op)
        (["finish_exact.epochs=1.5"], "must be a positive integer, got 1.5"),
        (["finish_exact.epochs=true"], "must be a positive integer, got True"),
        (["finish_exact.fraction=abc"], "must be a number in \\(0, 1\\), got 'abc'"),
        (["++finish_exact.epoch=1"], "finish_exact has no setting epoch"),
        (["finish_exact=3"], "finish_exact must be a group"),
    ],
)
def test_bad_settings_are_one_line_errors(tiny_corpus, tmp_path, overrides, message):
    base = ["logger=[]"] if any(o in overrides for o in ("loss=adaptive", "loss=full")) else SAMPLED
    cfg = compose_train([*tiny_overrides(tiny_corpus), *base, "trainer.max_epochs=3", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=message):
        train(cfg)


def test_a_run_killed_after_the_switch_resumes_exact_and_matches(tiny_corpus, tmp_path):
    def command(log_dir, marker):
        return [*tiny_overrides(tiny_corpus), "loss=sampled_softmax", "loss.num_negatives=8", "trainer.max_epochs=3",
                "finish_exact.epochs=1", "logger=[]", "~callbacks.rich_progress_bar",
                "callbacks.step_checkpoint.every_n_train_steps=20",
                "+callbacks.kill._target_=tests.helpers.KillOnceAtStep", "+callbacks.kill.step=250",
                f"+callbacks.kill.marker={marker}", f"paths.log_dir={log_dir}"]  # fmt: skip

    (tmp_path / "never").write_text("")
    reference = run_train_cli(*command(tmp_path / "reference", tmp_path / "never"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    args = command(tmp_path / "logs", tmp_path / "killed")
    assert run_train_cli(*args).returncode == -9  # killed in epoch 2, the exact one
    resumed = run_train_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads(next((tmp_path / "reference").rglob("results.json")).read_text())
    results = json.loads(next((tmp_path / "logs").rglob("results.json")).read_text())
    assert results["resumed_from"] and [r["objective"] for r in results["history"]] == [
        r["objective"] for r in expected["history"]
    ]
    assert results["test/ppl"] == expected["test/ppl"]


def test_an_early_stop_before_the_switch_warns_that_exact_softmax_never_ran(tiny_corpus, tmp_path, caplog):
    overrides = [
        *tiny_overrides(tiny_corpus),
        *SAMPLED,
        "trainer.max_epochs=4",
        "finish_exact.epochs=1",
        "++trainer.limit_train_batches=3",
        "+trainer.max_steps=6",
    ]  # fmt: skip  (stops after epoch 2 of 4)
    with caplog.at_level("WARNING"):
        results = train(compose_train(overrides, tmp_path))
    assert {entry["objective"] for entry in results["history"]} == {"sampled_softmax"}
    assert any("exact softmax was never used" in record.getMessage() for record in caplog.records)
