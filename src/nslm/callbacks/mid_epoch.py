"""Mid-epoch resume: everything beyond Lightning's own state that a run needs to continue exactly where its
checkpoint was taken, in one place.

Lightning restores weights, optimizer, lr schedulers and loop counters. A language model streaming ordered
windows also needs, at the checkpoint's step:

    the data position     windows of the epoch already trained; the datamodule skips them
                          (`skip_train_windows`) when it builds the train loader
    the carried LSTM state  per rank (each rank carries the state of its own streams)
    the random generators   per rank (dropout masks, negatives), applied at the first resumed step
    the plateau scheduler   Lightning does not step a ReduceLROnPlateau at the end of the epoch a run
                          resumed in; this callback does, as the uninterrupted run would

and it re-seeds every rank at fit start from the run's seed (as Lightning's DDP does for its ranks), so
draws do not depend on the number of ranks.

The per-rank parts are gathered into the checkpoint with a collective, so every rank must reach the save
together; nslm saves only at step boundaries (step/epoch checkpoints, the preemption handler), never
from inside a signal handler.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist
from lightning_fabric.utilities.seed import reset_seed

from nslm.utils.rng import capture_rng_state, restore_rng_state

log = logging.getLogger(__name__)


def _gather_objects(value: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


class MidEpochResume(pl.Callback):
    def __init__(self, datamodule: Any) -> None:
        """`datamodule`: the run's datamodule, which must offer `skip_train_windows(epoch, count)`."""
        self.datamodule = datamodule
        self.windows_done = 0  # training windows of the current epoch
        self._module: Any = None
        self._trainer: pl.Trainer | None = None
        self._restored: dict[str, Any] | None = None  # from a checkpoint, applied when a fit starts
        self._pending_rng: dict[str, Any] | None = None
        self._validated_this_epoch = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer, self._module = trainer, pl_module

    # ---- saving ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        hidden = self._module.train_hidden if self._module is not None else None
        mine = {
            "hidden": None if hidden is None else tuple(h.detach().cpu() for h in hidden),
            "rng": capture_rng_state(),
        }
        epoch = self._trainer.current_epoch if self._trainer is not None else 0
        return {"epoch": epoch, "windows_done": self.windows_done, "ranks": _gather_objects(mine)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Kept aside: Lightning also restores callbacks for `trainer.test(ckpt_path=best)`, which is no resume.
        self._restored = dict(state_dict)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restored = None

    # ---- resuming -------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        reset_seed()  # what Lightning's DDP does on every rank: draws independent of the number of ranks
        if self._restored is not None:
            # the loader is built after this hook and before on_train_start
            self.datamodule.skip_train_windows(self._restored["epoch"], self._restored["windows_done"])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated_this_epoch = False
        state, self._restored = self._restored, None
        if state is None:
            return
        ranks = state["ranks"]
        mine = ranks[trainer.global_rank] if len(ranks) == trainer.world_size else None
        if mine is None:
            log.warning(
                "resuming %d ranks from a checkpoint of %d: the carried LSTM state and generators start afresh",
                trainer.world_size,
                len(ranks),
            )
            return
        self._pending_rng = mine["rng"]
        if state["epoch"] == trainer.current_epoch and state["windows_done"] > 0:  # inside this epoch
            self.windows_done = state["windows_done"]
            hidden = mine["hidden"]
            pl_module.train_hidden = None if hidden is None else tuple(h.to(pl_module.device) for h in hidden)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Applied here, not at load time: nothing between the checkpoint and this step may draw from the
        # generators, exactly as in the uninterrupted run.
        if self._pending_rng is not None:
            restore_rng_state(self._pending_rng)
            self._pending_rng = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.windows_done += 1

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # (Lightning skips this hook when it restarts mid-epoch, so a resumed position survives it.)
        self.windows_done = 0
        self._validated_this_epoch = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated_this_epoch = self._validated_this_epoch or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning does not step plateau schedulers at the end of the epoch a run resumed in: it assumes
        # the monitored metric was lost with the restart. A run resumed mid-epoch has just validated this
        # epoch anew, so step them here, as the uninterrupted run does.
        if not (trainer.fit_loop.restarting and self._validated_this_epoch):
            return
        for config in trainer.lr_scheduler_configs:
            metric = trainer.callback_metrics.get(config.monitor) if config.monitor else None
            if config.reduce_on_plateau and config.interval == "epoch" and metric is not None:
                pl_module.lr_scheduler_step(config.scheduler, metric)
