"""Where things live: the repository root, the config directory, and the OmegaConf resolvers using them."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

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


def register_resolvers() -> None:
    """`${nslm_root:}` in configs resolves to `project_root()`."""
    if not OmegaConf.has_resolver("nslm_root"):
        OmegaConf.register_new_resolver("nslm_root", lambda: str(project_root()))
