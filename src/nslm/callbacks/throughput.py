"""`train/tokens_per_sec`: target tokens trained per second of training-loop time (validation excluded)."""

from __future__ import annotations

import statistics
import time
from collections import deque

import pytorch_lightning as pl


class TokenThroughput(pl.Callback):
    """Counts non-padded target tokens of every rank (each rank's count x world size: the ranks have equal
    windows) over the time spent in training batches, data loading included."""

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0
        # the latest steps' durations (benchmarks quote their median); bounded for long runs
        self.step_seconds: deque[float] = deque(maxlen=10_000)
        self._mark: float | None = None

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def median_step_seconds(self) -> float | None:
        return statistics.median(self.step_seconds) if self.step_seconds else None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.seconds += now - self._mark
            self.step_seconds.append(now - self._mark)
        self._mark = now
        self.tokens += batch.num_tokens * trainer.world_size
        if (trainer.global_step) % max(1, trainer.log_every_n_steps) == 0:  # after the optimizer step: +1 done
            pl_module.log("train/tokens_per_sec", self.tokens_per_sec, prog_bar=True)
            # tokens trained so far (all ranks, all segments): the x-axis of an equal-tokens comparison
            pl_module.log("train/tokens_seen", float(self.tokens), reduce_fx="max")

    def on_validation_start(self, trainer, pl_module) -> None:
        # Validation inside fit (end of epoch or val_check_interval) pauses the clock.
        if self._mark is not None:
            self.seconds += time.perf_counter() - self._mark
        self._mark = None

    def on_validation_end(self, trainer, pl_module) -> None:
        self._mark = time.perf_counter()

    def state_dict(self) -> dict:
        return {"tokens": self.tokens, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.tokens = state_dict["tokens"]
        self.seconds = state_dict["seconds"]
