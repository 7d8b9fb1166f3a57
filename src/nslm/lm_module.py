"""The LightningModule: an LSTM LM, a pluggable training objective, exact perplexity for evaluation.

The LSTM state is carried across the consecutive windows of an epoch (detached: truncated BPTT) and starts
from zeros at every epoch and every evaluation. Validation/test perplexity is exp of the token-weighted
mean NLL over the whole split, accumulated as sums in a torchmetrics metric, so it is exact under DDP too
(sum of NLL and of token counts over ranks, never a mean of per-batch or per-rank perplexities).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from nslm.data.windows import IGNORE_INDEX, TokenWindow
from nslm.errors import NslmError
from nslm.losses import FullSoftmaxLoss, exact_token_nll
from nslm.models.lstm import Hidden, detach_hidden
from nslm.utils.rng import capture_rng_state, restore_rng_state

# The module moves its own two-tensor windows (see transfer_batch_to_device); Lightning's notice is noise.
warnings.filterwarnings("ignore", message=r".*overridden `transfer_batch_to_device`.*")
# pytorch_lightning 2.6 still builds torch's deprecated LeafSpec when it restores a checkpoint; torch
# 2.13 warns about Lightning's code on every resume, and nothing in a user's hands can change it.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


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
        # Self-normalisation (log Z = logsumexp of the full logits): NCE-trained models are used
        # unnormalised, so how far log Z strays from 0 matters. Mean and mean square give the std.
        self.val_log_z = MeanMetric().set_dtype(torch.float64)
        self.val_log_z_sq = MeanMetric().set_dtype(torch.float64)
        if hasattr(self.loss, "initialize_output_layer"):
            self.loss.initialize_output_layer(net.output_bias)
        self._train_hidden: Hidden | None = None
        self._windows_done = 0  # training windows of the current epoch, for resuming part-way
        self._resume_state: dict[str, Any] | None = None  # read from a checkpoint, applied at train start
        self._pending_rng: dict[str, Any] | None = None
        self._validated_this_epoch = False
        self._eval_hidden: Hidden | None = None
        self.last_eval: dict[str, float] = {}

    def transfer_batch_to_device(self, batch: TokenWindow, device: torch.device, dataloader_idx: int) -> TokenWindow:
        # Lightning's generic walk over the batch costs ~1 ms per step on CPU; a window is two tensors.
        if batch.inputs.device == device:
            return batch
        return TokenWindow(
            batch.inputs.to(device, non_blocking=True), batch.targets.to(device, non_blocking=True), batch.num_tokens
        )

    def _is_logging_step(self) -> bool:
        # Metrics the progress bar does not need are logged only on the steps the loggers write.
        return (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0

    # ---- training -------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # (Lightning skips this hook when it restarts mid-epoch, so a resumed state survives it.)
        self._train_hidden = None
        self._windows_done = 0
        self._validated_this_epoch = False

    def on_train_epoch_end(self) -> None:
        # Lightning does not step plateau schedulers at the end of the epoch a run resumed in: it assumes
        # the monitored metric was lost with the restart. A run resumed mid-epoch has just validated
        # this epoch anew, so step them here, as the uninterrupted run does.
        if not (self.trainer.fit_loop.restarting and self._validated_this_epoch):
            return
        for config in self.trainer.lr_scheduler_configs:
            metric = self.trainer.callback_metrics.get(config.monitor) if config.monitor else None
            if config.reduce_on_plateau and config.interval == "epoch" and metric is not None:
                self.lr_scheduler_step(config.scheduler, metric)

    def on_train_start(self) -> None:
        """Resuming: continue the epoch at the checkpoint's window, with its LSTM state and RNG."""
        self._validated_this_epoch = False
        windows_done = self.resume_windows(self.current_epoch)
        state, self._resume_state = self._resume_state, None
        if state is None:
            return
        self._pending_rng = state["rng"]
        if windows_done > 0:  # resumed inside this epoch: carry on from the checkpoint's window and state
            self._windows_done = windows_done
            hidden = state["hidden"]
            self._train_hidden = None if hidden is None else tuple(h.to(self.device) for h in hidden)

    def resume_windows(self, epoch: int) -> int:
        """Windows of `epoch` already trained by the checkpoint being resumed (0 when not resuming).
        The datamodule skips them: Lightning asks for the train loader after restoring the checkpoint
        and before `on_train_start`."""
        state = self._resume_state
        return state["windows_done"] if state is not None and state["epoch"] == epoch else 0

    def on_train_batch_start(self, batch: TokenWindow, batch_idx: int) -> None:
        # Applied here, not at load time: nothing between the checkpoint and this step may draw from the
        # generators, exactly as in the uninterrupted run.
        if self._pending_rng is not None:
            restore_rng_state(self._pending_rng)
            self._pending_rng = None

    def training_step(self, batch: TokenWindow, batch_idx: int) -> torch.Tensor:
        self._windows_done += 1
        features, hidden = self.net(batch.inputs, self._train_hidden)
        self._train_hidden = detach_hidden(hidden)
        loss = self.loss(
            features.reshape(-1, features.shape[-1]),
            batch.targets.reshape(-1),
            self.net.output_weight,
            self.net.output_bias,
        )
        if not torch.isfinite(loss):
            raise NslmError(self._diverged_message(float(loss)))
        self.log("train/loss", loss, prog_bar=True)
        if self._is_logging_step():
            if getattr(self.loss, "exact", False):
                self.log("train/ppl", torch.exp(loss.detach()))
            self.log("lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def _diverged_message(self, value: float) -> str:
        saved = [
            Path(path) for cb in self.trainer.checkpoint_callbacks for path in (cb.last_model_path, cb.best_model_path)
        ]
        saved = [path for path in saved if str(path) not in ("", ".") and path.is_file()]
        last_good = max(saved, key=lambda path: path.stat().st_mtime) if saved else None
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was saved before it"
        return (
            f"training loss became {value} at step {self.global_step} (epoch {self.current_epoch}); {where}. "
            "Lower model.optimizer.lr or trainer.gradient_clip_val, or resume with ckpt_path=<that checkpoint>"
        )

    # ---- exact evaluation ---------------------------------------------------------------------------
    def _evaluate(self, batch: TokenWindow, metric: MeanMetric) -> torch.Tensor:
        features, self._eval_hidden = self.net(batch.inputs, self._eval_hidden)
        targets = batch.targets.reshape(-1)
        nll, log_z = exact_token_nll(
            features.reshape(-1, features.shape[-1]), targets, self.net.output_weight, self.net.output_bias
        )
        weight = (targets != IGNORE_INDEX).to(nll.dtype)
        metric.update(nll, weight=weight)
        return log_z, weight

    def _log_eval(self, prefix: str, metric: MeanMetric) -> None:
        mean_nll = float(metric.compute())  # sums reduced over ranks first
        metric.reset()
        self._log_value(f"{prefix}/loss", mean_nll)
        self._log_value(f"{prefix}/ppl", math.exp(mean_nll), prog_bar=True)
        oracle = getattr(self.trainer.datamodule, "oracle_ppl", None) or {}  # data=synthetic knows its best
        if prefix in oracle:
            self._log_value(f"{prefix}/ppl_over_oracle", math.exp(mean_nll) / oracle[prefix])

    def _log_value(self, name: str, value: float, prog_bar: bool = False) -> None:
        self.last_eval[name] = value
        self.log(name, value, prog_bar=prog_bar, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._eval_hidden = None

    def validation_step(self, batch: TokenWindow, batch_idx: int) -> None:
        log_z, weight = self._evaluate(batch, self.val_nll)
        self.val_log_z.update(log_z, weight=weight)
        self.val_log_z_sq.update(log_z.square(), weight=weight)

    def on_validation_epoch_end(self) -> None:
        self._validated_this_epoch = not self.trainer.sanity_checking
        self._log_eval("val", self.val_nll)
        mean, mean_sq = float(self.val_log_z.compute()), float(self.val_log_z_sq.compute())
        self.val_log_z.reset()
        self.val_log_z_sq.reset()
        self._log_value("val/log_z_mean", mean)
        self._log_value("val/log_z_std", math.sqrt(max(mean_sq - mean * mean, 0.0)))

    def on_test_epoch_start(self) -> None:
        self._eval_hidden = None

    def test_step(self, batch: TokenWindow, batch_idx: int) -> None:
        self._evaluate(batch, self.test_nll)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_nll)

    # ---- optimisation and checkpoints ---------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        sparse = getattr(self.loss, "sparse_gradients", False) or getattr(self.net.embedding, "sparse", False)
        if sparse and not isinstance(optimizer, torch.optim.SGD):
            raise NslmError(
                f"{type(optimizer).__name__} cannot apply sparse gradients (loss.sparse_gradients / "
                "model.net.sparse_embedding); use model/optimizer=sgd, or set loss.sparse_gradients=false "
                "and model.net.sparse_embedding=false"
            )
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

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if not gradient_clip_val:
            return
        params = [p for p in self.parameters() if p.grad is not None]
        if not any(p.grad.is_sparse for p in params):  # the usual path: Lightning's clipping
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        if gradient_clip_algorithm not in (None, "norm"):
            raise ValueError("sparse gradients (sampled losses) support gradient_clip_algorithm=norm only")
        clip_sparse_aware_(params, gradient_clip_val)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Where training stands inside the epoch: Lightning restores the loops, optimizer and schedulers;
        # the data position, the carried LSTM state and the generators are ours to restore.
        hidden = None if self._train_hidden is None else tuple(h.detach().cpu() for h in self._train_hidden)
        checkpoint["nslm_train_state"] = {
            "epoch": self.current_epoch,
            "windows_done": self._windows_done,
            "hidden": hidden,
            "rng": capture_rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resume_state = checkpoint.get("nslm_train_state")


@torch.no_grad()
def clip_sparse_aware_(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ for a mix of dense and sparse gradients (torch's own rejects sparse ones).

    A sparse gradient from `F.embedding(sparse=True)` may repeat a row; it is coalesced first so the norm
    is that of the dense gradient it stands for."""
    norms = []
    for param in params:
        if param.grad.is_sparse:
            param.grad = param.grad.coalesce()
            norms.append(param.grad._values().norm())
        else:
            norms.append(param.grad.norm())
    total = torch.stack(norms).norm()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for param in params:
        (param.grad._values() if param.grad.is_sparse else param.grad).mul_(scale)
    return total
