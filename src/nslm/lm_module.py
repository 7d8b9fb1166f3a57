"""The LightningModule: an LSTM LM, a pluggable training objective, exact perplexity for evaluation.

The LSTM state is carried across the consecutive windows of an epoch (detached: truncated BPTT) and starts
from zeros at every epoch and every evaluation. Validation/test perplexity is exp of the token-weighted
mean NLL over the whole split, accumulated as sums in a torchmetrics metric, so it is exact under DDP too
(sum of NLL and of token counts over ranks, never a mean of per-batch or per-rank perplexities).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from nslm.data.windows import IGNORE_INDEX, TokenWindow
from nslm.losses import FullSoftmaxLoss, exact_token_nll
from nslm.models.lstm import Hidden, detach_hidden


class LanguageModelModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = "val/ppl",
        loss: nn.Module | None = None,
    ) -> None:
        """
        Args:
            net: the language model (features out, `output_weight`/`output_bias` exposed).
            optimizer: a partial taking `params` (Hydra `_partial_: true`).
            scheduler: a partial taking `optimizer`, stepped once per epoch; a ReduceLROnPlateau watches
                `scheduler_monitor`.
            loss: the training objective; exact full softmax when omitted.
        """
        super().__init__()
        self.net = net
        self.loss = loss if loss is not None else FullSoftmaxLoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler or None  # model/scheduler=none composes to {}
        self.scheduler_monitor = scheduler_monitor
        self.val_nll = MeanMetric().set_dtype(torch.float64)
        self.test_nll = MeanMetric().set_dtype(torch.float64)
        self.metadata: dict[str, Any] = {}  # config + vocabulary, stored in every checkpoint
        self._train_hidden: Hidden | None = None
        self._eval_hidden: Hidden | None = None
        self.last_eval: dict[str, float] = {}

    # ---- training -------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._train_hidden = None

    def training_step(self, batch: TokenWindow, batch_idx: int) -> torch.Tensor:
        features, hidden = self.net(batch.inputs, self._train_hidden)
        self._train_hidden = detach_hidden(hidden)
        loss = self.loss(
            features.reshape(-1, features.shape[-1]),
            batch.targets.reshape(-1),
            self.net.output_weight,
            self.net.output_bias,
        )
        self.log("train/loss", loss, prog_bar=True)
        if getattr(self.loss, "exact", False):
            self.log("train/ppl", torch.exp(loss.detach()))
        self.log("lr", self.optimizers().param_groups[0]["lr"])
        return loss

    # ---- exact evaluation ---------------------------------------------------------------------------
    def _evaluate(self, batch: TokenWindow, metric: MeanMetric) -> None:
        features, self._eval_hidden = self.net(batch.inputs, self._eval_hidden)
        targets = batch.targets.reshape(-1)
        nll = exact_token_nll(
            features.reshape(-1, features.shape[-1]), targets, self.net.output_weight, self.net.output_bias
        )
        metric.update(nll, weight=(targets != IGNORE_INDEX).to(nll.dtype))

    def _log_eval(self, prefix: str, metric: MeanMetric) -> None:
        mean_nll = float(metric.compute())  # sums reduced over ranks first
        metric.reset()
        self.last_eval[f"{prefix}/loss"] = mean_nll
        self.last_eval[f"{prefix}/ppl"] = math.exp(mean_nll)
        self.log(f"{prefix}/loss", mean_nll, sync_dist=True)
        self.log(f"{prefix}/ppl", math.exp(mean_nll), prog_bar=True, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._eval_hidden = None

    def validation_step(self, batch: TokenWindow, batch_idx: int) -> None:
        self._evaluate(batch, self.val_nll)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_nll)

    def on_test_epoch_start(self) -> None:
        self._eval_hidden = None

    def test_step(self, batch: TokenWindow, batch_idx: int) -> None:
        self._evaluate(batch, self.test_nll)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_nll)

    # ---- optimisation and checkpoints ---------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.scheduler_monitor,
                "interval": "epoch",
                "strict": False,  # epochs without validation (limit_val_batches=0) just keep the lr
            },
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nslm"] = self.metadata

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.metadata = checkpoint.get("nslm", {})
