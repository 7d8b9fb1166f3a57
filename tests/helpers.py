"""Callbacks the tests plug into real `nslm-train` runs (as `+callbacks.<name>._target_=tests.helpers...`)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from nslm.batch import IGNORE_INDEX


class KillOnceAtStep(pl.Callback):
    """SIGKILL this process after optimizer step `step`, unless `marker` exists (so a restart runs on).
    Under DDP every rank kills itself; `{rank}` in `marker` gives each rank its own marker."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        marker = Path(self.marker.format(rank=trainer.global_rank))
        if trainer.global_step == self.step and not marker.exists():
            marker.write_text(str(self.step))
            os.kill(os.getpid(), signal.SIGKILL)


class RecordTrainWindows(pl.Callback):
    """Writes `<out_dir>/rank<r>.json`: the split positions of every target this rank trained on, after
    checking them against the batch's own tokens (so the record is what the rank really saw)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.positions: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        datamodule = trainer.datamodule
        dataset = datamodule.dataset("train", datamodule.hparams.batch_size)
        tokens = datamodule.cache.tokens("train")
        bptt = datamodule.hparams.bptt
        targets = batch.targets.cpu()
        for step in range(targets.shape[0]):
            for column in range(targets.shape[1]):
                if int(targets[step, column]) == IGNORE_INDEX:
                    continue
                position = int(dataset.starts[column]) + batch_idx * bptt + step
                assert int(tokens[position + 1]) == int(targets[step, column])
                self.positions.append(position)

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.positions))


class RecordLosses(pl.Callback):
    """Keeps every training step's loss (as a Python float) in `self.losses`."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


class PoisonLossAtStep(pl.Callback):
    """Turns the output bias into NaN after optimizer step `step`: the next loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.net.output_bias.fill_(float("nan"))


class KillOnceInJob(pl.Callback):
    """SIGKILL this process after optimizer step `step` of multirun job `job`, unless `marker` exists. With
    Hydra's basic launcher the jobs run inside the sweep's process: the whole search dies mid-trial."""

    def __init__(self, job: int, step: int, marker: str) -> None:
        self.job, self.step, self.marker = job, step, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.get().job.num == self.job and trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(self.step))
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStep(pl.Callback):
    """Send `signal_name` to this process (rank 0 only) after optimizer step `step`, unless `marker` exists."""

    def __init__(self, step: int, signal_name: str, marker: str) -> None:
        self.step, self.signum, self.marker = step, getattr(signal, signal_name), Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero and not self.marker.exists():
            self.marker.write_text(str(self.step))
            os.kill(os.getpid(), self.signum)


class PauseAtStep(pl.Callback):
    """After optimizer step `step`, write `paused` and wait until `release` exists (a run kept alive), unless
    `paused` exists already (so a second process running the same command does not pause)."""

    def __init__(self, step: int, paused: str, release: str) -> None:
        self.step, self.paused, self.release = step, Path(paused), Path(release)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.paused.exists():
            self.paused.write_text(str(os.getpid()))
            while not self.release.exists():
                time.sleep(0.05)
