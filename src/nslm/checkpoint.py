"""The nslm checkpoint: what nslm adds to Lightning's file, and the one safe way to read it.

Lightning writes the model, optimizer, schedulers, loops and callback states. nslm adds, under `"nslm"`,
the run's resolved config and its vocabulary (words, training counts, fingerprint), so a checkpoint alone
rebuilds its model (`nslm-eval`, `nslm-generate`) and refuses a corpus whose ids mean other words.

Every read goes through `read_checkpoint`, which uses `torch.load(weights_only=True)`: a checkpoint is
data (tensors, numbers, strings, lists, dicts), never code. A file whose unpickling would construct
arbitrary Python objects (which is how a crafted `.ckpt` runs a payload) is refused, as are empty,
truncated, corrupt and foreign files, each with one line that says so.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from nslm.build import build_module
from nslm.data.vocab import Vocabulary
from nslm.errors import NslmError

METADATA_KEY = "nslm"


class CheckpointError(NslmError):
    """A checkpoint that cannot be used: missing, unreadable, unsafe or not nslm's."""


def run_metadata(cfg: DictConfig, vocab: Vocabulary, corpus_key: str | None = None) -> dict[str, Any]:
    """What every checkpoint of a run carries: the resolved config, the vocabulary and the corpus it was
    prepared from (its token cache's key: resuming on edited files is refused)."""
    return {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "corpus_key": corpus_key,
        "vocab_itos": vocab.itos,
        "vocab_counts": vocab.counts,
        "vocab_fingerprint": vocab.fingerprint,
    }


class CheckpointMetadata(pl.Callback):
    """Writes `run_metadata` into every checkpoint the trainer saves (best, last, step, preemption)."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[METADATA_KEY] = self.metadata


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at `path`, loaded on the CPU as plain data; `CheckpointError` (one line) otherwise.

    `mmap=True` maps tensors instead of reading them: a cheap look at the metadata of a large file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass a file in it, e.g. {path / 'last.ckpt'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/<file>.ckpt")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (a write that never finished?); use another checkpoint")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; random bytes could pass for a pickle
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated (not a complete torch archive); use another checkpoint, "
            "e.g. checkpoints/last.ckpt or an epoch checkpoint of the same run"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # any failure to unpickle untrusted bytes is a bad file, not a bug of ours
        if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
            raise CheckpointError(
                f"refusing {path}: it holds Python objects, not just tensors and plain values, and loading it "
                "could run code (nslm checkpoints never do); use a checkpoint nslm-train wrote"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({_first_line(err)}); use another checkpoint, "
            "e.g. checkpoints/last.ckpt or an epoch checkpoint of the same run"
        ) from None
    meta = checkpoint.get(METADATA_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "vocab_itos" not in meta:
        raise CheckpointError(
            f"{path} is not an nslm checkpoint (no config/vocabulary inside); use one nslm-train wrote"
        )
    return checkpoint


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def checkpoint_config(checkpoint: dict[str, Any]) -> DictConfig:
    return OmegaConf.create(checkpoint[METADATA_KEY]["config"])


def checkpoint_vocabulary(checkpoint: dict[str, Any]) -> Vocabulary:
    """The vocabulary an nslm checkpoint carries (counts only feed training samplers; early checkpoints
    lack them, and read as uniform)."""
    meta = checkpoint[METADATA_KEY]
    itos = meta["vocab_itos"]
    return Vocabulary(itos, meta.get("vocab_counts") or [1] * len(itos))


def module_from_checkpoint(checkpoint: dict[str, Any], vocab: Vocabulary) -> pl.LightningModule:
    """The trained module of a loaded checkpoint, sized to `vocab`."""
    module = build_module(checkpoint_config(checkpoint), vocab)
    problem = weights_mismatch(module, checkpoint)
    if problem:
        raise CheckpointError(f"the checkpoint's weights do not fit the model its own config builds: {problem}")
    module.load_state_dict(checkpoint["state_dict"])
    return module


def weights_mismatch(module: torch.nn.Module, checkpoint: dict[str, Any]) -> str | None:
    """Why `checkpoint["state_dict"]` cannot load into `module` (missing, unexpected or resized tensors,
    the first few named), or None when it can. Checked before loading, where torch would raise a many-line
    RuntimeError: a checkpoint of another model size, loss or vocabulary is the user's choice, not a bug."""
    weights = checkpoint.get("state_dict")
    if not isinstance(weights, dict):
        return "it holds no state_dict (not a training checkpoint)"
    expected = module.state_dict()
    # (a sampler's `_extra_state` may be absent from older checkpoints: it loads without, see samplers/kernel.py)
    problems = [f"{name} missing" for name in expected if name not in weights and not name.endswith("_extra_state")]
    problems += [f"{name} unexpected" for name in weights if name not in expected]
    for name, tensor in expected.items():
        found = weights.get(name)
        if isinstance(tensor, torch.Tensor) and isinstance(found, torch.Tensor) and found.shape != tensor.shape:
            problems.append(f"{name} is {list(found.shape)}, the model has {list(tensor.shape)}")
    if not problems:
        return None
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more
