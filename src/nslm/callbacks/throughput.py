"""`train/tokens_per_sec`: target tokens trained per second of training-loop time (validation excluded)."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class TokenThroughput(pl.Callback):
    """Counts non-padded target tokens of every rank (each rank's count x world size: the ranks have equal
    windows) over the time spent in training batches, data loading included."""

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0
        self._mark: float | None = None

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.seconds += now - self._mark
        self._mark = now
        self.tokens += batch.num_tokens * trainer.world_size
        pl_module.log("train/tokens_per_sec", self.tokens_per_sec, prog_bar=True)

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
