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

from nslm.batch import IGNORE_INDEX, TokenWindow
from nslm.errors import ConfigError, NslmError
from nslm.losses import FullSoftmaxLoss, OutputObjective
from nslm.metrics import Float64Mean, SplitPerplexity
from nslm.metrics import frequency_buckets as frequency_buckets_of
from nslm.models.lstm import Hidden, detach_hidden
from nslm.optim import build_optimizer, clip_sparse_aware_

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
        loss: OutputObjective | None = None,
        frequency_buckets: int = 4,
        word_counts: torch.Tensor | None = None,
        unk_id: int | None = None,
    ) -> None:
        """
        Args:
            net: the language model (features out, `output_weight`/`output_bias` exposed).
            optimizer: a partial taking `params` (Hydra `_partial_: true`).
            scheduler: a partial taking `optimizer`, stepped once per epoch; a ReduceLROnPlateau watches
                `scheduler_monitor`.
            loss: the training objective; exact full softmax when omitted.
            frequency_buckets: val/test perplexity is also reported per bucket of target-word frequency
                (at most this many, of equal training-token mass, `<unk>` apart; nslm.metrics), from `word_counts` (the
                vocabulary's training counts by id) and `unk_id`. Without counts: overall only.
        """
        super().__init__()
        self.net = net
        self.loss = loss if loss is not None else FullSoftmaxLoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler or None  # model/scheduler=none composes to {}
        self.scheduler_monitor = scheduler_monitor
        if frequency_buckets < 1:
            raise ConfigError(f"model.frequency_buckets must be a positive integer, got {frequency_buckets}")
        by_bucket = word_counts is not None and unk_id is not None
        if by_bucket:
            bucket_of = frequency_buckets_of(word_counts.tolist(), unk_id, frequency_buckets)
        else:  # no counts: the overall figure only
            bucket_of = torch.zeros(net.vocab_size, dtype=torch.long)
        self.val_ppl, self.test_ppl = SplitPerplexity(bucket_of, by_bucket), SplitPerplexity(bucket_of, by_bucket)
        # Self-normalisation (log Z = logsumexp of the full logits): NCE-trained models are used
        # unnormalised, so how far log Z strays from 0 matters. Mean and mean square give the std.
        self.val_log_z = Float64Mean(nan_strategy="disable")  # float64 under any trainer.precision
        self.val_log_z_sq = Float64Mean(nan_strategy="disable")
        self.loss.initialize_output_layer(net.output_bias)
        #: the LSTM state carried (detached) from one training window to the next; a resumed run gets it
        #: back from its checkpoint (nslm.callbacks.mid_epoch)
        self.train_hidden: Hidden | None = None
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
        self.train_hidden = None

    def training_step(self, batch: TokenWindow, batch_idx: int) -> torch.Tensor:
        features, hidden = self.net(batch.inputs, self.train_hidden)
        self.train_hidden = detach_hidden(hidden)
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
            if self.loss.exact:
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
    def _evaluate(self, batch: TokenWindow, metric: SplitPerplexity) -> tuple[torch.Tensor, torch.Tensor]:
        features, self._eval_hidden = self.net(batch.inputs, self._eval_hidden)
        targets = batch.targets.reshape(-1)
        nll, log_z = self.loss.token_nll(
            features.reshape(-1, features.shape[-1]), targets, self.net.output_weight, self.net.output_bias
        )
        metric.update(nll, targets)
        return log_z, (targets != IGNORE_INDEX).to(log_z.dtype)

    def _log_eval(self, prefix: str, metric: SplitPerplexity) -> None:
        values = metric.compute()  # sums reduced over ranks first
        metric.reset()
        for name, value in values.items():
            self._log_value(f"{prefix}/{name}", value, prog_bar=name == "ppl")

    def _log_value(self, name: str, value: float, prog_bar: bool = False) -> None:
        self.last_eval[name] = value
        self.log(name, value, prog_bar=prog_bar, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._eval_hidden = None

    def validation_step(self, batch: TokenWindow, batch_idx: int) -> None:
        log_z, weight = self._evaluate(batch, self.val_ppl)
        self.val_log_z.update(log_z, weight=weight)
        self.val_log_z_sq.update(log_z.square(), weight=weight)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_ppl)
        mean, mean_sq = float(self.val_log_z.compute()), float(self.val_log_z_sq.compute())
        self.val_log_z.reset()
        self.val_log_z_sq.reset()
        self._log_value("val/log_z_mean", mean)
        self._log_value("val/log_z_std", math.sqrt(max(mean_sq - mean * mean, 0.0)))

    def on_test_epoch_start(self) -> None:
        self._eval_hidden = None

    def test_step(self, batch: TokenWindow, batch_idx: int) -> None:
        self._evaluate(batch, self.test_ppl)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_ppl)

    # ---- optimisation and checkpoints ---------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # finish_exact swaps the objective within a run: a checkpoint from the other side of the switch holds
        # the other objective's state (a kernel sampler's snapshot), which this module has no place for.
        weights, own = checkpoint.get("state_dict", {}), self.state_dict()
        for name in [name for name in weights if name.startswith("loss.") and name not in own]:
            del weights[name]

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Tables with sparse gradients (see `LSTMLanguageModel.sparse_tables`): updated lazily
        (`nslm.optim.sparse`) and averaged across DDP ranks as rows (`nslm.distributed.strategy`)."""
        return self.net.sparse_tables(self.loss.sparse_gradients)

    def constant_buffer_prefixes(self) -> tuple[str, ...]:
        """Buffers that never change in training (the sampler's tables, the frequency buckets): DDP need
        not broadcast them every step."""
        return ("loss.", "val_ppl.", "test_ppl.")

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.optimizer_factory, list(self.named_parameters()), self.sparse_parameters())
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
            raise ConfigError(
                "sparse gradients (sampled losses, sparse_embedding) are clipped by global norm only: set "
                "trainer.gradient_clip_algorithm=norm"
            )
        clip_sparse_aware_(params, gradient_clip_val)
