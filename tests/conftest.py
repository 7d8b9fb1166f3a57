"""Shared fixtures: isolated cache/output dirs, the PTB copy, a tiny corpus (the code they use: tests/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPO, ptb_data_root, write_corpus


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """No test writes into the checkout or reaches the network: caches and W&B live in tmp dirs."""
    monkeypatch.setenv("NSLM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "nslm-cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.getbasetemp() / "wandb"))
    # subprocesses run this checkout's code (and can import tests.helpers), not another checkout in .venv
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), str(REPO)]))
    # PTB never comes from the network here: the shared copy, or the one bundled with nslm
    monkeypatch.setenv("NSLM_DATA_DIR", str(ptb_data_root(tmp_path_factory)))


@pytest.fixture
def ptb_dir(tmp_path_factory) -> Path:
    return ptb_data_root(tmp_path_factory) / "ptb"


@pytest.fixture
def tiny_corpus(tmp_path) -> dict[str, Path]:
    return write_corpus(tmp_path / "corpus")
