"""The validation curve of a run, with wall-clock: `results.json["history"]`, which `nslm-report` plots
(val ppl against time). Loggers keep the same values per step, but not the time they were reached."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class ValidationHistory(pl.Callback):
    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []
        self._started: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # (not on_validation_epoch_end: callbacks run that hook before the module has logged val/ppl)
        if trainer.sanity_checking or self._started is None or "val/ppl" not in trainer.callback_metrics:
            return
        record = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "seconds": time.perf_counter() - self._started,
        }
        for name in ("val/ppl", "val/ppl_over_oracle"):
            if name in trainer.callback_metrics:
                record[name] = float(trainer.callback_metrics[name])
        self.records.append(record)
