"""Small Hydra helpers shared by the entry points."""

from __future__ import annotations

import difflib
import inspect
import re
import traceback
from typing import TYPE_CHECKING, Any

from hydra.utils import get_method, instantiate
from omegaconf import DictConfig

from nslm.errors import ConfigError

if TYPE_CHECKING:
    import pytorch_lightning as pl

_UNEXPECTED = re.compile(r"unexpected keyword argument '([^']+)'")
_LIGHTNING = ("pytorch_lightning", "lightning_fabric", "lightning")


def instantiate_each(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a config group holding named objects (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if isinstance(entry, DictConfig) and "_target_" in entry]


def count_parameters(module) -> int:
    """Unique parameters (tied weights count once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def instantiate_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> pl.Trainer:
    """`instantiate(trainer_cfg, **kwargs)`, with a setting the Trainer refuses reported as one ConfigError line.

    Hydra wraps whatever the Trainer raises in a multi-line InstantiationException; a typo
    (`++trainer.max_epoch=3`) or a value Lightning rejects (`trainer.devices=0`) is the user's
    configuration, not a bug, so it becomes one line that names the key (and the closest valid argument).
    """
    for key in _NUMERIC_TRAINER_KEYS:  # Lightning asserts on some of these: a bare AssertionError traceback
        value = trainer_cfg.get(key)
        if isinstance(value, (str, bool)):
            raise ConfigError(f"trainer.{key} must be a number, got {value!r}") from None
    try:
        return instantiate(trainer_cfg, **kwargs)
    except Exception as err:
        cause = _innermost(err)
        if isinstance(cause, TypeError) and (match := _UNEXPECTED.search(str(cause))):
            raise ConfigError(_unknown_key(trainer_cfg, match.group(1))) from None
        if _raised_by_lightning(cause):
            message = " ".join(str(cause).split())  # Lightning's reason, on one line
            raise ConfigError(f"the trainer settings were refused: {message} (fix the trainer.* override)") from None
        raise


_NUMERIC_TRAINER_KEYS = (
    "max_epochs",
    "min_epochs",
    "max_steps",
    "min_steps",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "num_sanity_val_steps",
    "log_every_n_steps",
    "accumulate_grad_batches",
    "check_val_every_n_epoch",
    "gradient_clip_val",
)  # fmt: skip  (not val_check_interval: "DD:HH:MM:SS" is a valid one)


def _innermost(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _raised_by_lightning(err: BaseException) -> bool:
    """Lightning's own argument checks (MisconfigurationException, ValueError, TypeError), not a bug elsewhere."""
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    if isinstance(err, MisconfigurationException):
        return True
    if not isinstance(err, (ValueError, TypeError)) or err.__traceback__ is None:
        return False
    origin = traceback.extract_tb(err.__traceback__)[-1].filename.replace("\\", "/")  # where it was raised
    return any(f"/{package}/" in origin for package in _LIGHTNING)


def _unknown_key(trainer_cfg: DictConfig, key: str) -> str:
    try:
        valid = [name for name in inspect.signature(get_method(str(trainer_cfg._target_))).parameters if name != "self"]
    except Exception:  # an unusual _target_: no suggestion, still one line
        valid = []
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean trainer.{close[0]}?" if close else "see conf/trainer/default.yaml for the usual ones"
    return f"trainer.{key} is not an argument of {trainer_cfg.get('_target_', 'the Trainer')}; {hint}"
