"""Preemption: on SIGTERM (Kubernetes, most schedulers), SIGUSR2 (submitit's warning before the time limit)
or SIGUSR1 (Lightning's SLURM requeue signal) a run saves where it is and stops, instead of dying with
its last step checkpoint up to `every_n_train_steps` behind.

The signal handler only records the signal (nothing else is safe inside a handler). At the end of the
training step in progress every rank learns whether any rank was signalled (one tiny all-reduce per step
under DDP, so ranks that were not signalled stop too, at the same step), then:

    1. all ranks save `checkpoints/preempted.ckpt` (the full mid-epoch state, see nslm.callbacks.mid_epoch)
    2. rank 0 writes the run record as `interrupted` (signal, step, checkpoint), never `completed`
    3. the other ranks exit (status 0: rank 0 reports the run), rank 0 waits for the ones it started
    4. the scheduler's own requeue still happens: a handler installed before nslm's (submitit's, on
       SIGUSR2) is called; under `trainer=slurm` (Lightning's auto-requeue on SIGUSR1) rank 0 runs
       `scontrol requeue` itself, as Lightning would
    5. `Preempted` is raised: nslm-train exits with 128 + the signal number (143 for SIGTERM), so
       schedulers, `&&` chains and W&B record an unfinished run

Running the same command again resumes from that checkpoint (`resume: auto`). The handler is installed
when nslm-train starts (`install`), so no phase of the run falls back to a default action or to
Lightning's handler (which exits 0):
- before training (data preparation, model build): the run stops when fit starts, recorded as
  interrupted with nothing to resume from (the same command starts it afresh);
- during validation inside the fit: at the next training step, as above (after the last epoch's
  validation: in the test that follows);
- during the final test: at the next test batch, when `last.ckpt` exists (training is done, nothing is
  saved; the same command resumes from it straight into the test); without one the test just finishes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.plugins.environments import SLURMEnvironment

from nslm.errors import NslmError
from nslm.run_record import write_interrupted

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(NslmError):
    """The run stopped at a preemption signal after saving; the same command resumes it."""

    def __init__(self, signum: int, checkpoint: Path | None, step: int, phase: str = "training") -> None:
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        where = f"{phase} at step {step}" + (f"; saved {checkpoint}" if phase == "training" else "")
        super().__init__(
            f"stopped by {signal.Signals(signum).name} during {where}. Run the same command again to resume"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Preemption(pl.Callback):
    def __init__(self, output_dir: Path) -> None:
        self.checkpoint = Path(output_dir) / "checkpoints" / "preempted.ckpt"
        self.output_dir = Path(output_dir)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}  # the handlers before nslm's first install (submitit's, ...)
        #: a stop in the test is only worth it when the fit ran and `last.ckpt` will take the rerun there
        self.resumable_after_training = True

    def _record(self, signum: int, frame) -> None:
        self.received = self.received or signum

    def install(self) -> None:
        """Record the signals from now on; the first call keeps the handlers it replaces for `uninstall`."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in SIGNALS:
            previous = signal.signal(signum, self._record)
            self._previous.setdefault(signum, previous)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    # Lightning registers its own handlers as each fit/validate/test starts, after the hooks before these:
    # ours replace them again (Lightning's SIGTERM handler runs a collective inside the handler, which
    # deadlocks DDP, and ends a test with exit status 0).
    def _take_over(self, trainer: pl.Trainer) -> None:
        self.install()
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None and connector.received_sigterm:  # arrived while Lightning's handler was in
            self.received = self.received or signal.SIGTERM
            connector.received_sigterm = False  # (else Lightning ends the next DDP step with exit status 0)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_over(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_over(trainer)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_over(trainer)

    def stop_if_signalled_before_fit(self, rank: int = 0) -> None:
        """A signal during data preparation or the model build: nothing to save, the record says so. Only
        rank 0 stops here (a child rank waits for it in the process group); a child's signal is kept and
        stops every rank together at the first training step."""
        if self.received and rank == 0:
            write_interrupted(self.output_dir, signal.Signals(self.received).name, None, 0)
            raise Preempted(self.received, None, 0, phase="set-up")

    def _signal_anywhere(self, trainer: pl.Trainer) -> int:
        local = torch.tensor([self.received or 0], device=trainer.strategy.root_device)
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(local, op=dist.ReduceOp.MAX)
        return int(local.item())

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        signum = self._signal_anywhere(trainer)
        if not signum:
            return
        resume_from = self.output_dir / "checkpoints" / "last.ckpt"
        if not self.resumable_after_training or not resume_from.is_file():
            return  # nothing would resume straight into the test: finishing it is the cheaper way out
        log.warning("%s received while testing: stopping (training is done; the same command tests again)",
                    signal.Signals(signum).name)  # fmt: skip
        self._stop(trainer, signum, resume_from, "testing")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        signum = self._signal_anywhere(trainer)
        if not signum:
            return
        log.warning("%s received: saving %s and stopping", signal.Signals(signum).name, self.checkpoint)
        trainer.save_checkpoint(self.checkpoint)  # every rank: the mid-epoch state gathers from all
        self._stop(trainer, signum, self.checkpoint, "training")

    def _stop(self, trainer: pl.Trainer, signum: int, checkpoint: Path, phase: str) -> None:
        if trainer.is_global_zero:
            write_interrupted(self.output_dir, signal.Signals(signum).name, checkpoint, trainer.global_step)
        trainer.strategy.barrier("nslm-preempted")  # the record is written before any rank exits
        # (handlers stay ours until train() ends: Lightning's teardown puts back what it found, i.e. ours)
        previous = self._previous.get(self.received) if self.received else None
        if not trainer.is_global_zero:
            os._exit(0)  # (Lightning's launcher would kill rank 0 on a child's non-zero status)
        for child in getattr(trainer.strategy.launcher, "procs", []):  # ranks Lightning's launcher started
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=60)
        environment = getattr(trainer.strategy, "cluster_environment", None)  # (single-device: none)
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            if signum == environment.requeue_signal:
                _requeue_slurm_job()
        elif callable(previous) and not type(previous).__module__.startswith(("pytorch_lightning", "lightning")):
            previous(self.received, None)  # e.g. submitit: requeues the job (and may exit)
        raise Preempted(signum, checkpoint, trainer.global_step, phase)


def _requeue_slurm_job() -> None:
    """What Lightning's SLURM auto-requeue does on its signal: `scontrol requeue <job>`."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID")
    if not job:
        return
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode == 0:
        log.info("requeued SLURM job %s", job)
    else:
        log.warning("scontrol requeue %s failed: %s", job, done.stderr.strip())
