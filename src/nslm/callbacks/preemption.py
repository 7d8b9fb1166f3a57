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

Running the same command again resumes from that checkpoint (`resume: auto`). A signal that arrives
during validation or testing takes effect at the next training step (testing finishes: the run is done).
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

    def __init__(self, signum: int, checkpoint: Path, step: int) -> None:
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step}; saved {checkpoint}. "
            "Run the same command again to resume"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Preemption(pl.Callback):
    def __init__(self, output_dir: Path) -> None:
        self.checkpoint = Path(output_dir) / "checkpoints" / "preempted.ckpt"
        self.output_dir = Path(output_dir)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, frame) -> None:
        self.received = self.received or signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning's own handlers (registered once the fit is set up, after on_fit_start), which
        # ours replace: Lightning's SIGTERM handler runs a collective inside the handler, which deadlocks DDP.
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._record)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _signal_anywhere(self, trainer: pl.Trainer) -> int:
        local = torch.tensor([self.received or 0], device=trainer.strategy.root_device)
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(local, op=dist.ReduceOp.MAX)
        return int(local.item())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        signum = self._signal_anywhere(trainer)
        if not signum:
            return
        name = signal.Signals(signum).name
        log.warning("%s received: saving %s and stopping", name, self.checkpoint)
        trainer.save_checkpoint(self.checkpoint)  # every rank: the mid-epoch state gathers from all
        if trainer.is_global_zero:
            write_interrupted(self.output_dir, name, self.checkpoint, trainer.global_step)
        trainer.strategy.barrier("nslm-preempted")  # the record is written before any rank exits
        previous = self._previous.get(self.received) if self.received else None
        self.teardown(trainer, pl_module, "fit")
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
        raise Preempted(signum, self.checkpoint, trainer.global_step)


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
