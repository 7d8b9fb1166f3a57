"""Print the composed Hydra config as a tree at start (and save it beside the run's outputs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

FIRST = ("data", "model", "loss", "trainer", "callbacks", "logger", "paths")


def print_config_tree(cfg: DictConfig, order: Sequence[str] = FIRST, save_to: Path | None = None) -> None:
    tree = rich.tree.Tree("config", style="dim", guide_style="dim")
    fields = [name for name in order if name in cfg] + [name for name in cfg if name not in order]
    for name in fields:
        branch = tree.add(str(name), style="bold")
        value = cfg[name]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        with open(save_to, "w") as handle:
            rich.print(tree, file=handle)
