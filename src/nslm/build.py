"""Build the LightningModule from a composed config and a vocabulary (train, benchmarks; eval and generate
through `nslm.checkpoint.module_from_checkpoint`)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict

from nslm.data.vocab import Vocabulary
from nslm.losses import SampledLoss


def owns_output_layer(cfg: DictConfig) -> bool:
    """Whether `cfg.loss` brings its own output layer (adaptive softmax): the network then builds none."""
    return bool(cfg.get("loss")) and get_class(cfg.loss._target_).owns_output_layer


def network_output_dim(cfg: DictConfig) -> int:
    net = cfg.model.net
    return int(net.embedding_dim if net.get("tie_weights") else net.hidden_dim)


def build_loss(cfg: DictConfig, counts: list[int]):
    """The training objective; sampled ones get their sampler, built on the training word counts; one with its
    own output layer gets the vocabulary size, the network's output size and the counts."""
    if not cfg.get("loss"):
        return None
    # counts go in after instantiation: as an instantiate() kwarg Hydra would turn the V-long list into
    # OmegaConf nodes (seconds at V=10k, minutes at V=1M)
    if owns_output_layer(cfg):
        factory = instantiate(cfg.loss, _partial_=True)
        return factory(vocab_size=len(counts), in_features=network_output_dim(cfg), counts=counts)
    if not issubclass(get_class(cfg.loss._target_), SampledLoss):
        return instantiate(cfg.loss)
    sampler = instantiate(cfg.sampler, _partial_=True)(counts=counts)
    return instantiate(cfg.loss, _partial_=True)(sampler=sampler)


def build_module(cfg: DictConfig, vocab: Vocabulary) -> pl.LightningModule:
    """The module for `cfg.model`, sized to `vocab` (sets `cfg.model.net.vocab_size` and `output_layer`)."""
    with open_dict(cfg):
        cfg.model.net.vocab_size = len(vocab)
        cfg.model.net.output_layer = not owns_output_layer(cfg)
    counts = torch.tensor(vocab.counts, dtype=torch.long)  # a tensor passes through instantiate untouched
    return instantiate(cfg.model, loss=build_loss(cfg, vocab.counts), word_counts=counts, unk_id=vocab.unk_id)
