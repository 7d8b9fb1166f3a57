"""Shared fixtures: isolated cache/output dirs, the shared PTB copy, tiny corpora, config composition."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nslm.utils.paths import config_dir

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    for candidate in (os.environ.get("NSLM_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "ptb" / "ptb.train.txt").is_file():
            return Path(candidate)
    return None


def ptb_data_root(tmp_path_factory) -> Path:
    """The shared PTB copy, else (a fresh clone) the copy bundled with nslm, unpacked once per session."""
    shared = shared_data_dir()
    if shared is not None:
        return shared
    from nslm.data.bundle import unpack_corpus
    from nslm.data.corpora import PennTreebank

    target = tmp_path_factory.getbasetemp() / "bundled-data"
    if not all((target / "ptb" / spec.name).is_file() for spec in PennTreebank.FILES.values()):
        files = {split: (spec.name, spec.sha256) for split, spec in PennTreebank.FILES.items()}
        unpack_corpus("ptb", files, [target / "ptb"])
    return target


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


def write_corpus(directory: Path, words: int = 3000, vocab: int = 50, seed: int = 0) -> dict[str, Path]:
    """Three small Zipf-ish text files; returns {split: path}."""
    rng = random.Random(seed)
    lexicon = [f"w{i}" for i in range(vocab)]
    weights = [1.0 / (rank + 1) for rank in range(vocab)]
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, size in (("train", words), ("valid", words // 5), ("test", words // 5)):
        lines, left = [], size
        while left > 0:
            length = min(left, rng.randint(3, 12))
            lines.append(" ".join(rng.choices(lexicon, weights, k=length)))
            left -= length
        paths[split] = directory / f"{split}.txt"
        paths[split].write_text("\n".join(lines) + "\n")
    return paths


@pytest.fixture
def tiny_corpus(tmp_path) -> dict[str, Path]:
    return write_corpus(tmp_path / "corpus")


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"paths.output_dir={output_dir}", "print_config=false", *overrides],
        )


def tiny_overrides(corpus: dict[str, Path]) -> list[str]:
    """A small model on the tiny corpus: seconds per run."""
    return [
        "data=text_files",
        f"data.train_path={corpus['train']}",
        f"data.valid_path={corpus['valid']}",
        f"data.test_path={corpus['test']}",
        "data.batch_size=4",
        "data.eval_batch_size=3",
        "data.bptt=8",
        "model.net.embedding_dim=16",
        "model.net.hidden_dim=16",
        "model.optimizer.lr=1.0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]


def run_train_cli(*args: str, timeout: int = 600, env_extra: dict | None = None):
    """`python -m nslm.train ARGS` from the checkout (so `tests.helpers` callbacks import), captured."""
    import subprocess
    import sys

    env = {**os.environ, **(env_extra or {})}  # PYTHONPATH from _isolated_env: `tests.helpers` imports
    return subprocess.run(
        [sys.executable, "-m", "nslm.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
