"""Finish exact: train with a sampled objective, then switch to exact softmax for the last epochs.

A sampled objective converges to a biased optimum unless its proposal follows the model (Blanc & Rendle
2018); a few epochs of exact softmax at the end move the model to the exact optimum from a point the cheap
epochs already brought close. `finish_exact.epochs=N` (or `finish_exact.fraction=f`, N = round(f x
max_epochs)) switches the module's objective to `FullSoftmaxLoss` at the start of epoch max_epochs - N, in
the same run: one `results.json`, and every `history` entry names the objective that trained up to it.

The switch needs no new optimiser: the output embedding's gradient simply becomes dense, which the lazy
optimisers (`nslm.optim.sparse`) and nslm's DDP strategy (dense gradients of its tables are all-reduced)
handle. A run resumed after the switch switches again at its start.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from nslm.errors import ConfigError
from nslm.losses import FullSoftmaxLoss, SampledLoss
from nslm.utils.checks import is_number, is_whole_number

log = logging.getLogger(__name__)


class FinishExact(pl.Callback):
    def __init__(self, epochs: int | None = None, fraction: float | None = None) -> None:
        if (epochs is None) == (fraction is None):
            raise ConfigError(
                "give one of finish_exact.epochs (last N epochs) or finish_exact.fraction (of max_epochs)"
            )
        if epochs is not None and not is_whole_number(epochs):
            raise ConfigError(f"finish_exact.epochs must be a positive integer, got {epochs!r}")
        if fraction is not None and not is_number(fraction):
            raise ConfigError(f"finish_exact.fraction must be a number in (0, 1), got {fraction!r}")
        if epochs is not None and epochs < 1:
            raise ConfigError(f"finish_exact.epochs must be a positive integer, got {epochs}")
        if fraction is not None and not 0 < fraction < 1:
            raise ConfigError(f"finish_exact.fraction must be in (0, 1), got {fraction}")
        self.epochs, self.fraction = epochs, fraction
        self.switch_epoch: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 2:
            raise ConfigError("finish_exact needs trainer.max_epochs >= 2 (some sampled epochs, then exact ones)")
        exact_epochs = self.epochs if self.epochs is not None else max(1, round(self.fraction * max_epochs))
        if exact_epochs >= max_epochs:
            raise ConfigError(
                f"finish_exact leaves no sampled epoch: {exact_epochs} exact of trainer.max_epochs={max_epochs}"
            )
        if not isinstance(pl_module.loss, SampledLoss):  # (exact already: nothing would switch)
            raise ConfigError("finish_exact switches a sampled objective to exact softmax: use loss=sampled_softmax, "
                              "nce or neg")  # fmt: skip
        self.switch_epoch = max_epochs - exact_epochs

    def _maybe_switch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.switch_epoch is None or trainer.current_epoch < self.switch_epoch:
            return
        if isinstance(pl_module.loss, SampledLoss):
            log.info("epoch %d: switching from %s to exact softmax", trainer.current_epoch, pl_module.loss.name)
            pl_module.loss = FullSoftmaxLoss()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stopped_early = self.switch_epoch is not None and trainer.current_epoch < self.switch_epoch
        if stopped_early and isinstance(pl_module.loss, SampledLoss):
            log.warning(
                "finish_exact: training stopped at epoch %d, before the switch at epoch %d: exact softmax was "
                "never used (an early stop or max_steps/max_time ended it first)",
                trainer.current_epoch, self.switch_epoch,
            )  # fmt: skip

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_switch(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_switch(trainer, pl_module)  # a run resumed after the switch (mid-epoch: no epoch start)
