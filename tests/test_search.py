"""nslm's resumable Optuna sweeper (nslm.search) in-process, with a stand-in launcher: a search killed
part-way continues its study with the right count, and failing or NaN trials never stop it. The real
`nslm-train hparams_search=...` path is in test_sweeps.py."""

from __future__ import annotations

import fcntl
import math
import os
import socket

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from nslm.search import FAILURE, OWNER, ResumableOptunaSweeperImpl, trial_outcome


class Killed(BaseException):
    """What a SIGKILL of the search looks like from inside: nothing after it runs."""


class StandInLauncher:
    """Runs no job: `behaviour(job number)` gives its value, an exception it raised, or a kill."""

    def __init__(self, behaviour):
        self.behaviour, self.launched = behaviour, []

    def launch(self, job_overrides, initial_job_idx):
        returns = []
        for offset, overrides in enumerate(job_overrides):
            number = initial_job_idx + offset
            self.launched.append((number, tuple(overrides)))
            outcome = self.behaviour(number)
            if outcome == "kill":
                raise Killed
            job = JobReturn(overrides=list(overrides))
            job.status = JobStatus.FAILED if isinstance(outcome, Exception) else JobStatus.COMPLETED
            job._return_value = outcome
            returns.append(job)
        return returns


def sweeper(tmp_path, n_trials: int, launcher: StandInLauncher, storage: str | None = "db"):
    sampler_cfg = {"_target_": "optuna.samplers.TPESampler", "seed": 7, "n_startup_trials": 100}
    impl = ResumableOptunaSweeperImpl(
        sampler=optuna.samplers.TPESampler(seed=7, n_startup_trials=100),
        direction="minimize",
        storage=f"sqlite:///{tmp_path}/optuna.db" if storage else None,
        study_name="search-0123abcd",
        n_trials=n_trials,
        n_jobs=1,
        max_failure_rate=1.0,
        search_space=None,
        custom_search_space=None,
        params=OmegaConf.create({"x": "interval(0.0, 1.0)"}),
    )
    impl.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "sweeper": {"sampler": sampler_cfg}}})
    impl.launcher, impl.hydra_context = launcher, None
    return impl


def load(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="search-0123abcd", storage=f"sqlite:///{tmp_path}/optuna.db")


def test_a_killed_search_continues_its_study_and_failures_do_not_stop_it(tmp_path):
    values = {0: 3.0, 1: RuntimeError("diverged at step 7"), 2: float("nan"), 3: "kill", 4: 2.0, 5: 1.0}
    first = StandInLauncher(values.get)
    with pytest.raises(Killed):
        sweeper(tmp_path, 5, first).sweep([])
    assert [number for number, _ in first.launched] == [0, 1, 2, 3]  # a raise and a NaN did not stop it
    states = [trial.state for trial in load(tmp_path).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING]

    values[3] = 4.0  # the same command again: trial 3 continues, then one more makes 5 in all
    second = StandInLauncher(values.get)
    sweeper(tmp_path, 5, second).sweep([])
    assert [number for number, _ in second.launched] == [3, 4]  # job N is trial N: no directory reused
    assert second.launched[0][1] == first.launched[3][1]  # trial 3 ran again with its own parameters
    assert all("hydra.sweeper.study_name=search-0123abcd" in overrides for _, overrides in second.launched)

    study = load(tmp_path)
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 3 and len(study.trials) == 5
    assert study.trials[1].user_attrs[FAILURE] == "RuntimeError: diverged at step 7"
    assert study.trials[2].user_attrs[FAILURE] == "the job returned nan"
    assert study.best_value == 2.0
    assert len({t.params["x"] for t in study.trials}) == 5  # the re-run drew new points, not the first run's again
    best = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert (best.best_value, best.best_trial, best.complete_trials, best.failed_trials) == (2.0, 4, 3, 2)

    third = StandInLauncher(values.get)
    sweeper(tmp_path, 5, third).sweep([])  # done: nothing to run
    sweeper(tmp_path, 6, third).sweep([])  # a larger budget: only the difference
    assert [number for number, _ in third.launched] == [5]
    assert len(load(tmp_path).trials) == 6


def test_a_job_that_finished_before_the_kill_is_not_run_again(tmp_path):
    with pytest.raises(Killed):
        sweeper(tmp_path, 3, StandInLauncher({0: 5.0, 1: "kill"}.get)).sweep([])
    (tmp_path / "1").mkdir()  # trial 1's job wrote its results; the kill came before the study heard of it
    (tmp_path / "1" / "results.json").write_text('{"status": "completed", "val/ppl": 4.5}')
    again = StandInLauncher({2: 6.0}.get)
    sweeper(tmp_path, 3, again).sweep([])
    assert [number for number, _ in again.launched] == [2]
    assert [t.value for t in load(tmp_path).trials] == [5.0, 4.5, 6.0]


def test_a_search_still_running_or_foreign_job_dirs_are_one_line_errors(tmp_path, capsys):
    study = optuna.create_study(study_name="search-0123abcd", storage=f"sqlite:///{tmp_path}/optuna.db")
    trial = study.ask()
    trial.set_user_attr(OWNER, {"host": socket.gethostname(), "pid": os.getppid()})  # a live process
    with pytest.raises(SystemExit) as info:
        sweeper(tmp_path, 2, StandInLauncher({}.get)).sweep([])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"nslm-train: error: the search search-0123abcd is already running (pid {os.getppid()}")

    other = tmp_path / "other"
    (other / "0" / ".hydra").mkdir(parents=True)  # a job of some earlier search, unknown to a new study
    with pytest.raises(SystemExit):
        sweeper(other, 2, StandInLauncher({}.get), storage=None).sweep([])
    assert "holds job 0, which study search-0123abcd" in capsys.readouterr().err


def test_trial_outcomes():
    def job(value, status=JobStatus.COMPLETED):
        done = JobReturn()
        done.status, done._return_value = status, value
        return done

    assert trial_outcome(job(12.5), 1) == ([12.5], None)
    assert trial_outcome(job(math.inf), 1) == (None, "the job returned inf")
    assert trial_outcome(job(None), 1) == (None, "the job returned None, not a number")
    assert trial_outcome(job(ValueError("bad"), JobStatus.FAILED), 1) == (None, "ValueError: bad")


def test_the_same_search_started_twice_is_refused_in_one_line(tmp_path, capsys):
    with open(tmp_path / "search.lock", "a+") as held:  # what a running search holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 12345 on node7\n")
        held.flush()
        launcher = StandInLauncher({}.get)
        with pytest.raises(SystemExit) as info:
            sweeper(tmp_path, 2, launcher).sweep([])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and launcher.launched == []
    assert err.startswith("nslm-train: error: the search search-0123abcd is already running (pid 12345 on node7)")
    sweeper(tmp_path, 1, StandInLauncher({0: 1.0}.get)).sweep([])  # released: it runs
