"""Hydra finds sweepers only under `hydra_plugins`: this is nslm's resumable Optuna sweeper's entry.

`conf/hparams_search/*.yaml` point `hydra.sweeper._target_` here. The work is in `nslm.search`, imported
when a search starts, so Hydra's plugin scan (every nslm command) does not import Optuna.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ResumableOptunaSweeper(Sweeper):
    """Takes the options of hydra-optuna-sweeper's OptunaSweeper (`hydra/sweeper: optuna`)."""

    def __init__(self, **options: Any) -> None:
        from nslm.search import ResumableOptunaSweeperImpl

        self.sweeper = ResumableOptunaSweeperImpl(**options)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
