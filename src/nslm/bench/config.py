"""The benchmark's model config, shared by the single-process bench (`nslm.bench.cli`) and the DDP ranks
(`nslm.bench.ddp`): its own module so that neither has to import the other for it."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nslm.utils.paths import config_dir


def compose_config(overrides: list[str]) -> DictConfig:
    """nslm's training config as `experiment=ptb_example` (2x200 LSTM, batch 20, bptt 35) plus `overrides`."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=["experiment=ptb_example", "paths.output_dir=.", *overrides])
