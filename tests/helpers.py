"""Test code shared by the test files: corpora, config composition, CLI runs, reference computations, and
callbacks the tests plug into real `nslm-train` runs (as `+callbacks.<name>._target_=tests.helpers...`)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nslm.batch import IGNORE_INDEX
from nslm.utils.paths import config_dir

REPO = Path(__file__).resolve().parents[1]


class KillOnceAtStep(pl.Callback):
    """SIGKILL this process after optimizer step `step`, unless `marker` exists (so a restart runs on).
    Under DDP every rank kills itself; `{rank}` in `marker` gives each rank its own marker."""

    def __init__(self, step: int, marker: str, delay_s: float = 0.0) -> None:
        self.step, self.marker, self.delay_s = step, marker, delay_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        marker = Path(self.marker.format(rank=trainer.global_rank))
        if trainer.global_step == self.step and not marker.exists():
            marker.write_text(str(self.step))
            time.sleep(self.delay_s)  # e.g. longer than a logger's flush interval
            os.kill(os.getpid(), signal.SIGKILL)


class RecordTrainWindows(pl.Callback):
    """Writes `<out_dir>/rank<r>.json`: the split positions of every target this rank trained on, after
    checking them against the batch's own tokens (so the record is what the rank really saw)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.positions: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        datamodule = trainer.datamodule
        dataset = datamodule.dataset("train", datamodule.hparams.batch_size)
        tokens = datamodule.cache.tokens("train")
        bptt = datamodule.hparams.bptt
        targets = batch.targets.cpu()
        for step in range(targets.shape[0]):
            for column in range(targets.shape[1]):
                if int(targets[step, column]) == IGNORE_INDEX:
                    continue
                position = int(dataset.starts[column]) + batch_idx * bptt + step
                assert int(tokens[position + 1]) == int(targets[step, column])
                self.positions.append(position)

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.positions))


class RecordLosses(pl.Callback):
    """Keeps every training step's loss (as a Python float) in `self.losses`."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


class PoisonLossAtStep(pl.Callback):
    """Turns the output bias into NaN after optimizer step `step`: the next loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.net.output_bias.fill_(float("nan"))


class KillOnceInJob(pl.Callback):
    """SIGKILL this process after optimizer step `step` of multirun job `job`, unless `marker` exists. With
    Hydra's basic launcher the jobs run inside the sweep's process: the whole search dies mid-trial."""

    def __init__(self, job: int, step: int, marker: str) -> None:
        self.job, self.step, self.marker = job, step, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.get().job.num == self.job and trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(self.step))
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStep(pl.Callback):
    """Send `signal_name` to this process (rank 0 only) after optimizer step `step`, unless `marker` exists."""

    def __init__(self, step: int, signal_name: str, marker: str) -> None:
        self.step, self.signum, self.marker = step, getattr(signal, signal_name), Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero and not self.marker.exists():
            self.marker.write_text(str(self.step))
            os.kill(os.getpid(), self.signum)


class SignalAtTestBatch(pl.Callback):
    """Send `signal_name` to this process (rank 0 only) after test batch `batch`, unless `marker` exists."""

    def __init__(self, batch: int, signal_name: str, marker: str) -> None:
        self.batch, self.signum, self.marker = batch, getattr(signal, signal_name), Path(marker)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == self.batch and trainer.is_global_zero and not self.marker.exists():
            self.marker.write_text(str(self.batch))
            os.kill(os.getpid(), self.signum)


class PauseAtStep(pl.Callback):
    """After optimizer step `step`, write `paused` and wait until `release` exists (a run kept alive), unless
    `paused` exists already (so a second process running the same command does not pause)."""

    def __init__(self, step: int, paused: str, release: str) -> None:
        self.step, self.paused, self.release = step, Path(paused), Path(release)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.paused.exists():
            self.paused.write_text(str(os.getpid()))
            while not self.release.exists():
                time.sleep(0.05)


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

    env = {**os.environ, **(env_extra or {})}  # PYTHONPATH from _isolated_env: `tests.helpers` imports
    return subprocess.run(
        [sys.executable, "-m", "nslm.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def compose_eval(overrides: list[str], output_dir):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("eval", overrides=[f"paths.output_dir={output_dir}", *overrides])


def unigram_ppl(corpus: dict) -> float:
    def words(path) -> list[str]:
        return [word for line in open(path) for word in [*line.split(), "<eos>"]]

    counts = Counter(words(corpus["train"]))
    total = sum(counts.values())
    valid = words(corpus["valid"])
    return math.exp(-sum(math.log(counts[word] / total) for word in valid) / len(valid))
