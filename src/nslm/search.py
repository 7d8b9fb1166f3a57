"""Optuna searches that survive a kill: `hparams_search=...` (hydra-optuna-sweeper, made resumable).

The installed sweeper (hydra-optuna-sweeper 1.3) keeps the study where `storage` says, but it runs
`n_trials` *more* trials on every invocation, numbers its jobs from 0 again (a re-run would write into the
first run's job directories, and nslm's auto-resume would continue their checkpoints with other
parameters), stops the whole search at the first job that raises (`max_failure_rate: 0.0`), and ends in a
traceback when no trial completed. This sweeper, registered as
`hydra_plugins.nslm_optuna_sweeper.ResumableOptunaSweeper`, changes exactly that:

- the study lives in `<sweep dir>/optuna.db` (SQLite) and the sweep dir is named after the search and
  its command's overrides (`conf/hparams_search/`), so the same command finds the same study again;
- `n_trials` is the total: a search of 20 killed after 12 runs 8 more;
- job directory `N` is trial `N`; a trial the kill interrupted is run again with its own parameters in
  its own directory (its training continues from its checkpoint, nslm's `resume: auto`);
- a trial whose job raises, or whose value is NaN/inf/missing, is a failed trial: recorded as such in
  the study (with the reason in its `nslm_failure` attribute) and the search goes on.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.trial import Trial, TrialState

from nslm.errors import ConfigError, NslmError, exit_on_user_error
from nslm.run_record import read_results
from nslm.utils.atomic import atomic_write_text

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)
OWNER = "nslm_owner"  # trial attribute: which search process runs it ({"host": ..., "pid": ...})
FAILURE = "nslm_failure"  # trial attribute: why a failed trial failed
_FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def trial_outcome(job: JobReturn, objectives: int) -> tuple[list[float] | None, str | None]:
    """(values, None) for a usable result, (None, why) for a trial that must be recorded as failed."""
    if job.status != JobStatus.COMPLETED:
        error = job._return_value
        return None, f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else "the job failed"
    raw = job.return_value
    try:
        values = [float(raw)] if objectives == 1 else [float(value) for value in raw]
    except (TypeError, ValueError):
        return None, f"the job returned {raw!r}, not {'a number' if objectives == 1 else 'numbers'}"
    if len(values) != objectives:
        return None, f"the job returned {len(values)} values for {objectives} objectives"
    if not all(math.isfinite(value) for value in values):
        return None, f"the job returned {raw!r}"
    return values, None


def _alive(owner: Any) -> bool:
    """Whether the search process recorded in a RUNNING trial still runs (on this host; elsewhere unknown)."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname() or owner.get("pid") == os.getpid():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except PermissionError:  # exists, but not ours to signal
        return True
    except (OSError, ValueError, TypeError, KeyError):  # gone, or not a pid at all
        return False
    return True


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    """OptunaSweeperImpl whose `sweep` continues a stored study (see the module docstring)."""

    def sweep(self, arguments: list[str]) -> None:
        try:
            self._sweep(arguments)
        except Exception as err:  # a user error is one line and exit status 2, as everywhere in nslm
            exit_on_user_error("nslm-train", err)
        finally:
            if (lock := getattr(self, "_lock_handle", None)) is not None:
                lock.close()  # releases search.lock
                self._lock_handle = None

    def _sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        distributions, fixed = create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])
        distributions = {**(self.search_space_distributions or {}), **distributions}
        if getattr(self.sampler, "func", None) is optuna.samplers.GridSampler:
            grid = {name: self._to_grid_sampler_choices(dist) for name, dist in distributions.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(choices) for choices in grid.values()))
        for name in fixed:
            distributions.pop(name, None)
        directions = self._get_directions()
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        name = str(self.study_name)
        if not re.fullmatch(r"[\w.-]+", name):
            raise ConfigError(f"hydra.sweeper.study_name={name!r} names a directory: use letters, digits, _ - .")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)  # the SQLite file lives there
        self._hold_lock(name)
        study = optuna.create_study(
            study_name=name, storage=self.storage, sampler=self.sampler, directions=directions, load_if_exists=True
        )
        self._check_ownership(study)
        self._reseed(study)
        log.info(
            "Optuna study %s (storage %s): %d of %d trials done; running this command again continues it",
            name, self.storage, self._finished(study), self.n_trials,
        )  # fmt: skip
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # the kill interrupted them
            value = recorded_value(self.sweep_dir / str(trial.number)) if len(directions) == 1 else None
            if value is not None:  # its job had finished: only the study's record was missing
                study.tell(trial.number, [value])
            elif self._finished(study) < self.n_trials:
                log.info("continuing trial %d, interrupted when its search was stopped", trial.number)
                self._run([Trial(study, trial._trial_id)], study, distributions, fixed, len(directions))
            else:
                study.tell(trial.number, state=TrialState.FAIL)
        while (left := self.n_trials - self._finished(study)) > 0:
            trials = [study.ask() for _ in range(min(self.n_jobs, left))]
            self._run(trials, study, distributions, fixed, len(directions))
        self._write_results(study, directions)

    def _hold_lock(self, name: str) -> None:
        """`<sweep dir>/search.lock`, held while this search runs (a kill releases it too): the same search
        started twice would run the same trials twice."""
        if fcntl is None:  # not on Linux/macOS: only the RUNNING trials' owners are checked
            return
        handle = open(self.sweep_dir / "search.lock", "a+")  # noqa: SIM115 (kept open: it is the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"the search {name} is already running ({holder}); wait for it, or give this one another "
                "hydra.sweeper.study_name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock_handle = handle

    def _reseed(self, study: optuna.Study) -> None:
        """A seeded sampler, made again on a re-run, would draw the first run's parameters once more:
        continue with seed + (trials so far) instead, which is as reproducible and draws new points."""
        sampler_cfg = self.config.hydra.sweeper.get("sampler")
        if not study.trials or not sampler_cfg or sampler_cfg.get("seed") is None or "_partial_" in sampler_cfg:
            return  # a new study, an unseeded sampler, or the grid sampler (it skips visited points itself)
        study.sampler = instantiate(sampler_cfg, seed=int(sampler_cfg.seed) + len(study.trials))

    @staticmethod
    def _finished(study: optuna.Study) -> int:
        return len(study.get_trials(deepcopy=False, states=_FINISHED))

    def _check_ownership(self, study: optuna.Study) -> None:
        """One search process per study; job directories must belong to the study's trials."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get(OWNER)
            if _alive(owner):
                raise ConfigError(
                    f"the search {study.study_name} is already running (pid {owner['pid']} on {owner['host']}); "
                    "wait for it, or give this one another hydra.sweeper.study_name"
                )  # (where search.lock could not tell: no flock, or another host on a shared disk)
        jobs = [int(p.name) for p in self.sweep_dir.iterdir() if p.name.isdigit() and (p / ".hydra").is_dir()]
        if jobs and max(jobs) >= len(study.trials):  # e.g. storage=null, or optuna.db deleted: not ours to reuse
            raise ConfigError(
                f"{self.sweep_dir} holds job {max(jobs)}, which study {study.study_name} (storage "
                f"{self.storage}) does not know; remove that directory or pick another hydra.sweep.dir"
            )

    def _run(self, trials: list[Trial], study: optuna.Study, distributions: dict, fixed: dict, objectives: int) -> None:
        owner = {"host": socket.gethostname(), "pid": os.getpid()}
        for trial in trials:
            trial.set_user_attr(OWNER, owner)
        overrides = [
            (*trial_overrides, f"hydra.sweeper.study_name={study.study_name}")  # jobs resolve the same sweep dir
            for trial_overrides in self._configure_trials(trials, distributions, fixed)
        ]
        first = trials[0].number
        if [trial.number for trial in trials] == list(range(first, first + len(trials))):
            returns = self.launcher.launch(overrides, initial_job_idx=first)  # job N is trial N
        else:  # another search process took numbers in between: one launch per trial
            pairs = zip(trials, overrides, strict=True)
            returns = [self.launcher.launch([o], initial_job_idx=trial.number)[0] for trial, o in pairs]
        failures = 0
        for trial, job in zip(trials, returns, strict=True):
            values, problem = trial_outcome(job, objectives)
            if problem is None:
                study.tell(trial, values)
                continue
            failures += 1
            trial.set_user_attr(FAILURE, problem[:1000])
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed (%s); the search goes on", trial.number, problem.splitlines()[0])
        if failures / len(trials) > self.max_failure_rate:
            raise NslmError(
                f"{failures} of {len(trials)} trials failed, above hydra.sweeper.max_failure_rate="
                f"{self.max_failure_rate}; see {self.sweep_dir}/summary.csv (re-run the command to continue)"
            )

    def _write_results(self, study: optuna.Study, directions: list[str]) -> None:
        failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise NslmError(
                f"no trial of the search {study.study_name} completed ({failed} failed); their errors are in "
                f"{self.sweep_dir}/summary.csv"
            )
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "storage": self.storage}
        if len(directions) == 1:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            log.info("best trial %d: value %s, parameters %s", best.number, best.value, best.params)
        else:
            results["solutions"] = [{"params": t.params, "values": t.values} for t in study.best_trials]
        results.update(complete_trials=len(complete), failed_trials=failed)
        atomic_write_text(self.sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results)))


def recorded_value(job_dir: Path) -> float | None:
    """The val/ppl a finished job recorded, if any (a kill may land between its end and the study's tell)."""
    results = read_results(job_dir)
    if not isinstance(results, dict) or results.get("status", "completed") != "completed":
        return None
    value = results.get("val/ppl")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
