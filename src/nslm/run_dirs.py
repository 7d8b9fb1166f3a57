"""What a run directory tells about its run: its `results.json` and the overrides that started it.

Read by the sweep summary (nslm.sweeps) and by auto-resume (nslm.resume); a missing or unreadable file
reads as None, since a run killed early may have written neither.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def read_results(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None


def run_overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides Hydra recorded in `<run_dir>/.hydra/overrides.yaml`."""
    try:
        return [str(item) for item in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")]
    except Exception:  # missing or unreadable
        return None


def run_choices(run_dir: Path) -> dict[str, str]:
    """The config-group options a Hydra run was composed from (`loss: nce`, `sampler: unigram`, ...)."""
    try:
        choices = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices
    except Exception:  # not started by Hydra, or the file is gone
        return {}
    return {str(key): str(value) for key, value in choices.items() if value is not None}
