"""One owner per run, and resume checks what it resumes: a live run is never entered by a second identical
command, a dead owner's run is taken over, a corpus edited since the checkpoint is a fresh run (or a
one-line error for ckpt_path=), and an unreadable newest checkpoint falls back to a readable one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nslm.run_lock import LOCK_FILE, RunLock, RunLockedError, owner_alive, read_owner
from tests.helpers import REPO, run_train_cli, tiny_overrides


def _command(corpus, log_dir: Path, *extra: str) -> list[str]:
    return [
        *tiny_overrides(corpus),
        "trainer.max_epochs=2",
        "logger=csv",
        "~callbacks.rich_progress_bar",
        "callbacks.step_checkpoint.every_n_train_steps=5",
        f"paths.log_dir={log_dir}",
        *extra,
    ]


def _runs(log_dir: Path) -> list[Path]:
    return sorted((log_dir / "train" / "runs").iterdir())


def test_a_second_identical_command_never_enters_the_live_run(tiny_corpus, tmp_path):
    paused, release = tmp_path / "paused", tmp_path / "release"
    pause = ["+callbacks.pause._target_=tests.helpers.PauseAtStep", "+callbacks.pause.step=12",
             f"+callbacks.pause.paused={paused}", f"+callbacks.pause.release={release}"]  # fmt: skip
    args = _command(tiny_corpus, tmp_path / "logs", *pause)
    first = subprocess.Popen([sys.executable, "-m", "nslm.train", *args], cwd=REPO, env=os.environ.copy(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not paused.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert paused.exists(), first.stderr.read() if first.poll() is not None else "the first run never paused"
        live = _runs(tmp_path / "logs")[0]
        assert read_owner(live)["pid"] == first.pid and (live / "checkpoints" / "last-step.ckpt").exists()

        second = run_train_cli(*args)  # the very same command, while the first is alive (and paused)
        assert second.returncode == 0, second.stderr[-3000:]
        assert f"not resuming {live}: it is running (pid {first.pid}" in second.stdout + second.stderr
        release.write_text("")
        assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    runs = _runs(tmp_path / "logs")
    assert len(runs) == 2  # each command finished its own run in its own directory
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        assert results["status"] == "completed" and results["output_dir"] == str(run)
        assert results["resumed_from"] is None
        assert not (run / LOCK_FILE).exists()  # released at the end
        steps = [int(line.split(",")[-1]) for line in (run / "csv" / "metrics.csv").read_text().splitlines()[1:]
                 if line.split(",")[-1].isdigit()]  # fmt: skip
        assert steps == sorted(steps)  # one writer: no interleaved rows


def test_a_dead_owners_lock_is_taken_over_and_a_live_one_refuses(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "nonce": "x"}))
    assert not owner_alive(read_owner(tmp_path))
    lock = RunLock(tmp_path)
    lock.acquire()  # taken over
    assert read_owner(tmp_path)["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(RunLockedError, match=f"in use by another nslm-train \\(pid {os.getppid()} on") as caught:
        RunLock(tmp_path).acquire()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("pid", ["abc", None, True, -1, 0])
def test_a_damaged_lock_names_no_owner_and_is_taken_over(tmp_path, pid):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    assert not owner_alive(read_owner(tmp_path))  # (os.kill(-1, 0) or os.kill(0, 0) would say "alive")
    lock = RunLock(tmp_path)
    lock.acquire()
    assert read_owner(tmp_path)["pid"] == os.getpid()
    lock.release()


def test_a_reused_pid_is_not_the_dead_owner(tmp_path):
    """The owner died and an unrelated process got its pid: its start time differs, so the run is free."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stat = Path(f"/proc/{live.pid}/stat")
        if not stat.exists():
            pytest.skip("needs /proc")
        started = stat.read_text().rsplit(")", 1)[-1].split()[19]  # proc(5): field 22, starttime
        host = socket.gethostname()
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": live.pid, "host": host, "proc_start": started}))
        assert owner_alive(read_owner(tmp_path))  # the owner itself
        other = str(int(started) - 1)
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": live.pid, "host": host, "proc_start": other}))
        assert not owner_alive(read_owner(tmp_path))  # the same pid, another process
    finally:
        live.kill()
        live.wait()


def test_another_hosts_lock_is_alive_while_its_heartbeat_is_fresh(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "some-other-node"}))
    assert owner_alive(read_owner(tmp_path))
    an_hour_ago = time.time() - 3600
    os.utime(tmp_path / LOCK_FILE, (an_hour_ago, an_hour_ago))
    assert not owner_alive(read_owner(tmp_path))


def _killed_run(corpus, log_dir: Path, marker: Path) -> Path:
    args = _command(corpus, log_dir, "+callbacks.kill._target_=tests.helpers.KillOnceAtStep",
                    "+callbacks.kill.step=130", f"+callbacks.kill.marker={marker}")  # fmt: skip
    killed = run_train_cli(*args)
    assert killed.returncode == -9, killed.stderr[-3000:]
    return _runs(log_dir)[0]


def test_an_edited_corpus_is_a_fresh_run_not_a_silent_or_crashing_resume(tiny_corpus, tmp_path):
    marker = tmp_path / "killed"
    interrupted = _killed_run(tiny_corpus, tmp_path / "logs", marker)
    checkpoint = interrupted / "checkpoints" / "last-step.ckpt"
    with open(tiny_corpus["train"], "a") as handle:  # a new word: another vocabulary (V changes)
        handle.write("w1 brandnewword w2\n")
    args = _command(tiny_corpus, tmp_path / "logs", "+callbacks.kill._target_=tests.helpers.KillOnceAtStep",
                    "+callbacks.kill.step=130", f"+callbacks.kill.marker={marker}")  # fmt: skip
    again = run_train_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"not resuming {interrupted}: its vocabulary" in again.stdout + again.stderr
    fresh = [run for run in _runs(tmp_path / "logs") if run != interrupted]
    assert len(fresh) == 1 and json.loads((fresh[0] / "results.json").read_text())["resumed_from"] is None
    assert not (interrupted / "results.json").exists()  # the interrupted run is left as it was

    forced = run_train_cli(*_command(tiny_corpus, tmp_path / "forced", f"ckpt_path={checkpoint}"))
    assert forced.returncode == 2, forced.stderr[-3000:]
    errors = [line for line in forced.stderr.splitlines() if line.startswith("nslm-train: error:")]
    assert len(errors) == 1 and "cannot continue on this corpus: its vocabulary" in errors[0]
    assert "resume=false" in errors[0] and "Traceback" not in forced.stderr


def test_an_unreadable_newest_checkpoint_falls_back_to_a_readable_one(tiny_corpus, tmp_path):
    marker = tmp_path / "killed"
    interrupted = _killed_run(tiny_corpus, tmp_path / "logs", marker)
    newest = interrupted / "checkpoints" / "last-step.ckpt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a write that never finished
    args = _command(tiny_corpus, tmp_path / "logs", "+callbacks.kill._target_=tests.helpers.KillOnceAtStep",
                    "+callbacks.kill.step=130", f"+callbacks.kill.marker={marker}")  # fmt: skip
    resumed = run_train_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"not resuming from {newest}" in resumed.stdout + resumed.stderr
    results = json.loads((interrupted / "results.json").read_text())
    assert results["status"] == "completed" and results["resumed_from"].endswith("last.ckpt")
