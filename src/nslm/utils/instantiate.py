"""Small Hydra helpers shared by the entry points."""

from __future__ import annotations

import logging
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def instantiate_each(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a config group holding named objects (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if isinstance(entry, DictConfig) and "_target_" in entry]


def count_parameters(module) -> int:
    """Unique parameters (tied weights count once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
