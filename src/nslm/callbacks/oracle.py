"""`*/ppl_over_oracle` on `data=synthetic`: how far from the best possible perplexity a run is.

The synthetic datamodule knows its source's exact perplexity on every split (`oracle_ppl`); this callback
divides the run's exact val/test perplexity by it as soon as they are known, logs the ratio to every
logger under the same name, and gives `results.json` its ratio fields (`results`), 1.0 being as good as
the true source.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class OracleRatio(pl.Callback):
    def __init__(self, oracle_ppl: dict[str, float]) -> None:
        """`oracle_ppl`: {"val": ppl, "test": ppl} of the true source on those splits."""
        self.oracle_ppl = oracle_ppl

    def _log(self, trainer: pl.Trainer, split: str) -> None:
        ppl = trainer.callback_metrics.get(f"{split}/ppl")
        if ppl is None or trainer.sanity_checking:
            return
        name, ratio = f"{split}/ppl_over_oracle", float(ppl) / self.oracle_ppl[split]
        # after the module's own logging (on_*_end): straight to the loggers, and where the history,
        # the progress bar and the checkpoint callbacks read metrics
        trainer.callback_metrics[name] = torch.tensor(ratio)
        for logger in trainer.loggers:
            logger.log_metrics({name: ratio}, step=trainer.global_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, "test")

    def results(self, val_ppl: float | None, test_ppl: float | None) -> dict[str, float | None]:
        """The run record's oracle fields, for the reported (best-checkpoint) val and test ppl."""
        return {
            "val/oracle_ppl": self.oracle_ppl["val"],
            "test/oracle_ppl": self.oracle_ppl["test"],
            "val/ppl_over_oracle": None if val_ppl is None else val_ppl / self.oracle_ppl["val"],
            "test/ppl_over_oracle": None if test_ppl is None else test_ppl / self.oracle_ppl["test"],
        }
