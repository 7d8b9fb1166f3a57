"""Where things live: the repository root, the config directory, and the OmegaConf resolvers using them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def project_root() -> Path:
    """The checkout's root when nslm runs from one (editable install), else the working directory.

    `NSLM_ROOT` overrides both, e.g. to put `data/` and `outputs/` on a scratch disk.
    """
    if env := os.environ.get("NSLM_ROOT"):
        return Path(env).resolve()
    checkout = _PACKAGE_DIR.parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf").is_dir():
        return checkout
    return Path.cwd()


def config_dir() -> Path:
    """The Hydra config tree: `<root>/conf` in a checkout (the only supported install is editable)."""
    conf = _PACKAGE_DIR.parents[1] / "conf"
    if not conf.is_dir():
        raise FileNotFoundError(
            f"nslm's config tree was not found at {conf}; install nslm editable from its checkout "
            "(`pip install -e .`, as the Makefile does)."
        )
    return conf


#: overrides that say how to run, not what to search: re-running with them changed continues the same search
_NEUTRAL_SEARCH_KEYS = ("resume", "ckpt_path", "print_config", "trainer.enable_progress_bar", "hydra.")


def search_name(search: str | None, overrides: Any) -> str:
    """`<search>-<hash of the command's overrides>`: the same command always names the same search.

    Names an Optuna search's study and sweep directory (`conf/hparams_search/`), so that running a killed
    search's command again finds its study; a search with other overrides gets another name.
    """
    items = OmegaConf.to_container(overrides, resolve=False) if isinstance(overrides, ListConfig) else overrides
    kept = sorted(str(item) for item in items or [] if not str(item).lstrip("+~").startswith(_NEUTRAL_SEARCH_KEYS))
    digest = hashlib.sha256("\n".join(kept).encode()).hexdigest()[:8]
    return f"{search or 'search'}-{digest}"


def register_resolvers() -> None:
    """`${nslm_root:}` resolves to `project_root()`, `${nslm_search_name:...}` to `search_name(...)`."""
    if not OmegaConf.has_resolver("nslm_root"):
        OmegaConf.register_new_resolver("nslm_root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("nslm_search_name"):
        OmegaConf.register_new_resolver("nslm_search_name", search_name)
