"""W&B across a kill and a resume, offline, read back from the real `.wandb` files: the killed segment's
metrics up to its last flush survive, the resumed segment continues the step count, the summary carries
the best val ppl, the final test ppl and the wall-clock, and the recorded exit code is the run's own."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_train_cli, tiny_overrides
from tests.wandb_reader import read_offline_run


def command(corpus, log_dir, *extra: str) -> list[str]:
    return [
        *tiny_overrides(corpus),
        "loss=sampled_softmax",
        "loss.num_negatives=8",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=5",
        "logger=wandb",
        "logger.wandb.flush_seconds=0.2",
        "~callbacks.rich_progress_bar",
        "callbacks.step_checkpoint.every_n_train_steps=20",
        f"paths.log_dir={log_dir}",
        *extra,
    ]


def test_a_killed_and_resumed_run_is_one_continuous_wandb_run(tiny_corpus, tmp_path):
    kill = ["+callbacks.kill._target_=tests.helpers.KillOnceAtStep", "+callbacks.kill.step=130",
            "+callbacks.kill.delay_s=1.0", f"+callbacks.kill.marker={tmp_path / 'killed'}"]  # fmt: skip
    args = command(tiny_corpus, tmp_path / "logs", *kill)
    assert run_train_cli(*args).returncode == -9  # SIGKILL in epoch 1, a second after step 130
    run_dir = next((tmp_path / "logs").glob("train/runs/*"))  # (the resumed command adds a job dir of its own)
    resumed = run_train_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    first, second = (read_offline_run(path) for path in sorted((run_dir / "wandb").glob("offline-run-*")))
    assert first.run_id == second.run_id == (run_dir / "wandb_run_id").read_text().strip()

    steps_first = [row["_step"] for row in first.history]
    steps_second = [row["_step"] for row in second.history]
    assert steps_first and max(steps_first) <= 130  # flushed before the kill: epoch 0 and part of epoch 1
    assert any("val/ppl" in row for row in first.history)  # epoch 0's val ppl reached the file
    resumed_from = 120  # the step checkpoint the second segment continued from
    assert min(steps_second) > resumed_from and steps_second == sorted(steps_second)  # no restart at 0
    assert all(row["_step"] == row["trainer/global_step"] for row in first.history + second.history)
    assert any("train/tokens_seen" in row for row in second.history)

    assert first.exit_code is None  # a SIGKILLed process records nothing; the resumed one its own exit
    assert second.exit_code == 0
    assert second.summary["val/ppl"] == results["val/ppl"]  # the best (tested) checkpoint's, not the last
    assert second.summary["test/ppl"] == pytest.approx(results["test/ppl"], rel=1e-6)  # (logged as float32)
    assert second.summary["wall_seconds"] == results["wall_seconds"]


def test_a_preempted_run_records_its_exit_code_in_wandb(tiny_corpus, tmp_path):
    signal = [
        "+callbacks.signal._target_=tests.helpers.SignalAtStep",
        "+callbacks.signal.step=30",
        "+callbacks.signal.signal_name=SIGTERM",
        f"+callbacks.signal.marker={tmp_path / 'signalled'}",
    ]
    done = run_train_cli(*command(tiny_corpus, tmp_path / "logs", *signal))
    assert done.returncode == 143, done.stderr[-3000:]
    run_dir = next((tmp_path / "logs").glob("train/runs/*"))
    assert read_offline_run(next((run_dir / "wandb").glob("offline-run-*"))).exit_code == 143
