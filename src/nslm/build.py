"""Build the LightningModule from a composed config and a vocabulary (train, benchmarks; eval and generate
through `nslm.checkpoint.module_from_checkpoint`)."""

from __future__ import annotations

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict

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
    """The module for `cfg.model`, sized to `vocab` (sets `cfg.model.net.vocab_size`)."""
    with open_dict(cfg):
        cfg.model.net.vocab_size = len(vocab)
    return instantiate(cfg.model, loss=build_loss(cfg, vocab.counts))
