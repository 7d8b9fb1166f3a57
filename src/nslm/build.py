"""Build the LightningModule from a composed config and a vocabulary, or from a checkpoint (train, eval,
generate, benchmarks)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from nslm.data.vocab import Vocabulary
from nslm.losses import SampledLoss


def build_loss(cfg: DictConfig, counts: list[int]):
    """The training objective; sampled ones get their sampler, built on the training word counts."""
    if not cfg.get("loss"):
        return None
    if not issubclass(get_class(cfg.loss._target_), SampledLoss):
        return instantiate(cfg.loss)
    # counts go in after instantiation: as an instantiate() kwarg Hydra would turn the V-long list into
    # OmegaConf nodes (seconds at V=10k, minutes at V=1M)
    sampler = instantiate(cfg.sampler, _partial_=True)(counts=counts)
    return instantiate(cfg.loss, _partial_=True)(sampler=sampler)


def build_module(cfg: DictConfig, vocab: Vocabulary) -> pl.LightningModule:
    """The module for `cfg.model`, sized to `vocab`, carrying config and vocabulary for checkpoints."""
    with open_dict(cfg):
        cfg.model.net.vocab_size = len(vocab)
    module = instantiate(cfg.model, loss=build_loss(cfg, vocab.counts))
    module.metadata = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "vocab_itos": vocab.itos,
        "vocab_counts": vocab.counts,
        "vocab_fingerprint": vocab.fingerprint,
    }
    return module


def checkpoint_vocabulary(checkpoint: dict[str, Any]) -> Vocabulary:
    """The vocabulary an nslm checkpoint carries (counts only feed training samplers; early checkpoints
    lack them, and read as uniform)."""
    meta = checkpoint["nslm"]
    itos = meta["vocab_itos"]
    return Vocabulary(itos, meta.get("vocab_counts") or [1] * len(itos))


def module_from_checkpoint(checkpoint: dict[str, Any], vocab: Vocabulary) -> pl.LightningModule:
    """The trained module of a loaded checkpoint (`nslm.eval.load_checkpoint`), sized to `vocab`."""
    module = build_module(OmegaConf.create(checkpoint["nslm"]["config"]), vocab)
    module.load_state_dict(checkpoint["state_dict"])
    return module
