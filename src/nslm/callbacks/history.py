"""The validation curve of a run, with wall-clock: `results.json["history"]`, which `nslm-report` plots
(val ppl against time). Loggers keep the same values per step, but not the time they were reached.

The curve and the training time travel in the checkpoint, so a run that is killed and resumed (SLURM
preemption, `resume: auto`) reports its whole curve and the time of all its segments, not just the last.
Time between a segment's last checkpoint and its death is lost work and is not counted.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl


class ValidationHistory(pl.Callback):
    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []
        self.carried_seconds = 0.0  # fit time of earlier segments of a resumed run, from the checkpoint
        self._started: float | None = None
        self._restored: dict[str, Any] | None = None

    @property
    def fit_seconds(self) -> float:
        """Seconds spent in `fit`, this segment and the ones before it."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.carried_seconds + running

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_restored()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_restored()  # a resumed fit that had nothing left to train (killed while testing)

    def _take_restored(self) -> None:
        # After every restore, whatever the strategy: only a resumed fit takes the checkpoint's state.
        if self._restored is not None:
            self.records = list(self._restored.get("records", []))
            self.carried_seconds = float(self._restored.get("seconds", 0.0))
            self._restored = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restored = None  # `trainer.test(ckpt_path=best)` restores callbacks too: not a resume

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # (not on_validation_epoch_end: callbacks run that hook before the module has logged val/ppl)
        fitting = trainer.state.fn == "fit"  # not a validate() after the fit
        if not fitting or trainer.sanity_checking or self._started is None or "val/ppl" not in trainer.callback_metrics:
            return
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step, "seconds": self.fit_seconds}
        record["objective"] = pl_module.loss.name  # what trained up to here (finish_exact switches it)
        for name, value in trainer.callback_metrics.items():
            if name in ("val/ppl", "val/ppl_over_oracle") or name.startswith("val/ppl_bucket_"):
                record[name] = float(value)
        self.records.append(record)

    def state_dict(self) -> dict[str, Any]:
        return {"records": list(self.records), "seconds": self.fit_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Kept aside, not applied: Lightning restores callbacks from any checkpoint it loads, including the
        # best one that `trainer.test` evaluates, whose curve and clock stop at the best epoch.
        self._restored = dict(state_dict)
