"""Resuming: a run SIGKILLed mid-epoch and restarted with the same command continues from its last
checkpoint (optimizer, lr schedule, epoch, data position, LSTM state, RNG) and ends exactly where an
uninterrupted run ends."""

from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint

from nslm.build import build_module
from nslm.callbacks import ValidationHistory
from nslm.resume import find_interrupted_run
from tests.helpers import compose_train, run_train_cli, tiny_overrides

KILL_AT_STEP = 130  # epoch 2 of ~106 windows, between two step checkpoints (every 20 steps)


def command(corpus, log_dir: Path, marker: Path) -> list[str]:
    return [
        *tiny_overrides(corpus),
        "loss=sampled_softmax",  # negatives are drawn from the RNG too: resuming must restore it
        "loss.num_negatives=8",
        "trainer.max_epochs=3",
        "logger=csv",
        "callbacks.step_checkpoint.every_n_train_steps=20",
        "+callbacks.kill._target_=tests.helpers.KillOnceAtStep",
        f"+callbacks.kill.step={KILL_AT_STEP}",
        f"+callbacks.kill.marker={marker}",
        f"paths.log_dir={log_dir}",
    ]


def test_sigkill_mid_epoch_then_the_same_command_resumes_and_matches(tiny_corpus, tmp_path):
    reference_marker = tmp_path / "never-kill"
    reference_marker.write_text("")
    started = time.perf_counter()
    reference = run_train_cli(*command(tiny_corpus, tmp_path / "reference", reference_marker))
    reference_seconds = time.perf_counter() - started
    assert reference.returncode == 0, reference.stderr[-3000:]

    args = command(tiny_corpus, tmp_path / "logs", tmp_path / "killed")
    killed = run_train_cli(*args)
    assert killed.returncode == -signal.SIGKILL
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1 and not (runs[0] / "results.json").exists()
    assert (runs[0] / "checkpoints" / "last-step.ckpt").is_file()

    resumed = run_train_cli(*args)  # the very same command
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((runs[0] / "results.json").read_text())  # completed in the interrupted run's dir
    assert results["resumed_from"].endswith("last-step.ckpt")
    expected = json.loads(next((tmp_path / "reference").glob("train/runs/*/results.json")).read_text())
    # the clock covers the fit and stays within the command's own time (the restore that testing the best
    # checkpoint does is checked precisely by test_testing_an_earlier_checkpoint_keeps_the_curve_and_the_clock)
    assert expected["history"][-1]["seconds"] < expected["wall_seconds"] < reference_seconds
    assert results["global_step"] == expected["global_step"]
    assert results["epochs"] == expected["epochs"] == 3
    for metric in ("val/ppl", "val/ppl_last", "test/ppl"):
        assert results[metric] == expected[metric], metric
    # the CSV log continues: every epoch's val/ppl, as in the uninterrupted run's log
    logged = read_val_ppl(runs[0] / "csv" / "metrics.csv")
    assert logged == read_val_ppl(next((tmp_path / "reference").glob("train/runs/*/csv/metrics.csv")))
    assert sorted(logged) == [0, 1, 2]
    # the validation curve and the clock carry over from the killed segment: all three epochs, in order
    assert [record["epoch"] for record in results["history"]] == [0, 1, 2]
    assert [record["val/ppl"] for record in results["history"]] == [record["val/ppl"] for record in expected["history"]]
    seconds = [record["seconds"] for record in results["history"]]
    assert seconds == sorted(seconds) and results["wall_seconds"] > seconds[-1]


def read_val_ppl(path: Path) -> dict[int, float]:
    with open(path, newline="") as handle:
        return {int(row["epoch"]): float(row["val/ppl"]) for row in csv.DictReader(handle) if row.get("val/ppl")}


FAKE_CHECKPOINT = {"nslm": {"config": {}, "vocab_itos": ["<eos>", "<unk>"]}, "state_dict": {}}


def _fake_run(root: Path, name: str, overrides: list[str], checkpoint: bool, status: str | None) -> Path:
    run = root / "train" / "runs" / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    if checkpoint:
        (run / "checkpoints").mkdir()
        torch.save(FAKE_CHECKPOINT, run / "checkpoints" / "last.ckpt")
    if status:
        (run / "results.json").write_text(json.dumps({"status": status}))
    return run


def test_only_an_unfinished_run_of_the_same_command_is_resumed(tmp_path):
    wanted = ["loss=nce", "trainer.max_epochs=3"]
    _fake_run(tmp_path, "a-finished", wanted, checkpoint=True, status="completed")
    _fake_run(tmp_path, "b-other-command", ["loss=neg", "trainer.max_epochs=3"], checkpoint=True, status=None)
    _fake_run(tmp_path, "c-no-checkpoint", wanted, checkpoint=False, status=None)
    interrupted = _fake_run(tmp_path, "d-interrupted", [*wanted, "ckpt_path=null"], checkpoint=True, status="failed")
    current = tmp_path / "train" / "runs" / "e-current"
    found = find_interrupted_run(tmp_path / "train", list(reversed(wanted)), current)
    assert found == (interrupted, interrupted / "checkpoints" / "last.ckpt")
    assert find_interrupted_run(tmp_path / "train", ["loss=sampled_softmax"], current) is None


def test_testing_an_earlier_checkpoint_keeps_the_curve_and_the_clock(tiny_corpus, tmp_path):
    """`trainer.test(ckpt_path=best)` restores callbacks as well; ValidationHistory must take a checkpoint's
    curve and time only when a fit resumes from it, or a run whose best epoch is early loses its later curve."""
    cfg = compose_train(tiny_overrides(tiny_corpus), tmp_path / "run")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    module = build_module(cfg, datamodule.vocab)
    history = ValidationHistory()
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[history, every_epoch], logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    curve = list(history.records)
    assert [record["epoch"] for record in curve] == [0, 1]

    trainer.test(module, datamodule=datamodule, ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"))
    assert history.records == curve and history.carried_seconds == 0.0
