"""Preemption: real signals sent to real nslm-train processes. On SIGTERM, SIGUSR1 and SIGUSR2 a run saves
a mid-epoch checkpoint at once, records itself as interrupted, exits 128 + the signal number, and the same
command resumes to the uninterrupted run's exact result; under 2-rank DDP every rank stops at one step."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.helpers import run_train_cli, tiny_overrides

SIGNAL_AT_STEP = 30  # epoch 0 of ~106 windows (1 process); no step checkpoint before it


def command(corpus, log_dir: Path, signal_name: str, marker: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        *tiny_overrides(corpus),
        "loss=sampled_softmax",  # negatives and their RNG must resume exactly too
        "loss.num_negatives=8",
        "model.optimizer.momentum=0.9",  # and the lazy optimiser's state
        "trainer.max_epochs=2",
        "logger=csv",
        "~callbacks.rich_progress_bar",
        "callbacks.step_checkpoint.every_n_train_steps=1000",  # only the preemption saves mid-epoch
        "+callbacks.signal._target_=tests.helpers.SignalAtStep",
        f"+callbacks.signal.step={SIGNAL_AT_STEP}",
        f"+callbacks.signal.signal_name={signal_name}",
        f"+callbacks.signal.marker={marker}",
        f"paths.log_dir={log_dir}",
        *extra,
    ]


def results_of(log_dir: Path) -> dict:
    return json.loads(next(log_dir.glob("train/runs/*/results.json")).read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted runs (1 process, 2 DDP ranks), by their results."""
    from tests.helpers import write_corpus

    base = tmp_path_factory.mktemp("preemption")
    corpus = write_corpus(base / "corpus")
    never = base / "never"
    never.write_text("")
    out = {}
    for name, extra in (("single", ()), ("ddp", ("trainer=ddp_cpu", "data.batch_size=2"))):
        done = run_train_cli(*command(corpus, base / name, "SIGTERM", never, extra))
        assert done.returncode == 0, done.stderr[-3000:]
        out[name] = results_of(base / name)
    return corpus, out


def preempt_and_resume(corpus, tmp_path: Path, signal_name: str, extra: tuple[str, ...] = ()) -> tuple[dict, dict]:
    args = command(corpus, tmp_path / "logs", signal_name, tmp_path / "signalled", extra)
    stopped = run_train_cli(*args)
    signum = getattr(signal, signal_name)
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("nslm-train:")]
    assert len(lines) == 1 and f"stopped by {signal_name} during training at step" in lines[0], stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    run_dir = next((tmp_path / "logs").glob("train/runs/*"))
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == signal_name
    assert Path(record["checkpoint"]) == run_dir / "checkpoints" / "preempted.ckpt"
    assert (run_dir / "checkpoints" / "preempted.ckpt").is_file()

    resumed = run_train_cli(*args)  # the very same command
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return record, json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGUSR1", "SIGUSR2"])
def test_a_signal_saves_stops_and_the_same_command_resumes_exactly(reference, tmp_path, signal_name):
    corpus, expected = reference
    record, results = preempt_and_resume(corpus, tmp_path, signal_name)
    # saved at the signal: the step the signal arrived at (or the next one), not an old step checkpoint
    assert SIGNAL_AT_STEP <= record["global_step"] <= SIGNAL_AT_STEP + 1
    assert results["status"] == "completed" and results["resumed_from"].endswith("preempted.ckpt")
    assert results["global_step"] == expected["single"]["global_step"]
    for metric in ("val/ppl", "test/ppl"):
        assert results[metric] == expected["single"][metric], metric


def test_under_ddp_every_rank_stops_at_the_same_step_and_resumes_exactly(reference, tmp_path):
    """SIGTERM reaches rank 0 only (as `kill <pid>` does): rank 1 learns of it at the same step."""
    corpus, expected = reference
    record, results = preempt_and_resume(corpus, tmp_path, "SIGTERM", ("trainer=ddp_cpu", "data.batch_size=2"))
    assert SIGNAL_AT_STEP <= record["global_step"] <= SIGNAL_AT_STEP + 1
    assert results["global_step"] == expected["ddp"]["global_step"]
    for metric in ("val/ppl", "test/ppl"):
        assert results[metric] == pytest.approx(expected["ddp"][metric], rel=1e-6), metric


def test_a_signal_while_testing_is_recorded_and_the_same_command_tests_again(reference, tmp_path):
    """Training is done: nothing to save, exit 143 not 0, and the rerun keeps the whole curve and clock."""
    corpus, expected = reference
    args = [
        *command(corpus, tmp_path / "logs", "SIGTERM", tmp_path / "never", ()),
        "+callbacks.test_signal._target_=tests.helpers.SignalAtTestBatch",
        "+callbacks.test_signal.batch=0",
        "+callbacks.test_signal.signal_name=SIGTERM",
        f"+callbacks.test_signal.marker={tmp_path / 'signalled'}",
    ]
    (tmp_path / "never").write_text("")  # no signal while training
    stopped = run_train_cli(*args)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr and "during testing" in stopped.stderr
    run_dir = next((tmp_path / "logs").glob("train/runs/*"))
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"

    resumed = run_train_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    reference_run = expected["single"]
    assert results["status"] == "completed"
    assert results["test/ppl"] == reference_run["test/ppl"]
    assert results["val/ppl_last"] == reference_run["val/ppl_last"]  # (the rerun validates nothing itself)
    assert [h["val/ppl"] for h in results["history"]] == [h["val/ppl"] for h in reference_run["history"]]
    assert results["wall_seconds"] >= results["history"][-1]["seconds"]  # the fit's clock came back with it


def test_a_signal_before_training_starts_is_recorded_without_a_checkpoint(tmp_path):
    import os

    from nslm.callbacks import Preempted, Preemption

    previous = signal.getsignal(signal.SIGUSR2)
    preemption = Preemption(tmp_path)
    preemption.install()
    os.kill(os.getpid(), signal.SIGUSR2)  # recorded, not the default action (which would end pytest)
    with pytest.raises(Preempted) as stop:
        preemption.stop_if_signalled_before_fit()
    preemption.uninstall()
    assert stop.value.exit_code == 128 + signal.SIGUSR2 and "during set-up" in str(stop.value)
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGUSR2) == previous
    assert json.loads((tmp_path / "results.json").read_text())["checkpoint"] is None
