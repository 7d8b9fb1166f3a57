"""Which run and checkpoint a restarted command continues (`resume: auto`), and whether it may.

`resume: auto` (the default) makes a restarted command pick up its own interrupted run: the newest
readable checkpoint of a run directory under `${paths.log_dir}/${task_name}` started with the same
command-line overrides, whose run record is not `completed` and whose owner (`nslm.run_lock`) is not
alive. The resumed run keeps writing into that directory, so the interrupted run simply completes. This
is what a SLURM requeue, a preempted job or a killed sweep job needs: the same command, nothing to edit.

What is resumed is checked (`check_corpus`): the checkpoint's corpus and vocabulary must be the ones the
command prepares now; a corpus edited since is a fresh run (auto) or a one-line error (`ckpt_path=`).
A checkpoint that cannot be read (a crash while writing it, a full disk) is skipped with a warning in
favour of the newest readable one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from nslm.checkpoint import METADATA_KEY, CheckpointError, read_checkpoint
from nslm.distributed.launch import share_with_ddp_children
from nslm.errors import ConfigError
from nslm.run_lock import describe, owner_alive, read_owner
from nslm.run_record import is_finished, run_overrides

log = logging.getLogger(__name__)

#: checkpoints that hold the latest training state: end of epoch (`last`), every N steps (`last-step`),
#: at a preemption signal (`preempted`), Lightning's SLURM requeue (`hpc_ckpt_<n>`); and, only as a
#: fallback when those are unreadable, the per-epoch checkpoints
RESUMABLE = ("checkpoints/last.ckpt", "checkpoints/last-step.ckpt", "checkpoints/preempted.ckpt", "hpc_ckpt_*.ckpt")
FALLBACK = ("checkpoints/epoch_*.ckpt",)
#: overrides that say how to resume, not what to train: they do not make a different run
_NEUTRAL_KEYS = ("ckpt_path", "resume", "hydra.", "paths.output_dir")


def _newest_first(run_dir: Path, patterns: tuple[str, ...]) -> list[Path]:
    found = {path for pattern in patterns for path in run_dir.glob(pattern) if path.is_file()}
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of `run_dir` that reads as an nslm checkpoint; unreadable ones are skipped
    with a warning (a preferred one first, then the per-epoch ones)."""
    for path in [*_newest_first(run_dir, RESUMABLE), *_newest_first(run_dir, FALLBACK)]:
        try:
            read_checkpoint(path, mmap=True)
        except CheckpointError as err:
            log.warning("not resuming from %s: %s", path, err)
            continue
        return path
    return None


def _significant(overrides: list[str]) -> list[str]:
    return sorted(item for item in overrides if not item.lstrip("+~").startswith(_NEUTRAL_KEYS))


def find_interrupted_run(task_dir: Path, overrides: list[str], current_dir: Path) -> tuple[Path, Path] | None:
    """(run dir, checkpoint) of the newest unfinished, unowned run of `task_dir` with these overrides."""
    wanted = _significant(overrides)
    candidates: list[tuple[float, Path]] = []
    for hydra_dir in [*task_dir.glob("runs/*/.hydra"), *task_dir.glob("multiruns/*/*/.hydra")]:
        run_dir = hydra_dir.parent
        if run_dir.resolve() == current_dir.resolve() or is_finished(run_dir):
            continue
        recorded = run_overrides(run_dir)
        if recorded is None or _significant(recorded) != wanted:
            continue
        checkpoints = _newest_first(run_dir, RESUMABLE + FALLBACK)
        if checkpoints:
            candidates.append((checkpoints[0].stat().st_mtime, run_dir))
    for _, run_dir in sorted(candidates, reverse=True):
        owner = read_owner(run_dir)
        if owner_alive(owner):
            log.warning("not resuming %s: it is running (%s); starting a new run", run_dir, describe(owner))
            continue
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is not None:
            return run_dir, checkpoint
    return None


def check_corpus(checkpoint: dict[str, Any], corpus_key: str, vocab_fingerprint: str) -> str | None:
    """Why `checkpoint` cannot continue on the corpus prepared now, or None when it can."""
    meta = checkpoint[METADATA_KEY]
    if meta.get("vocab_fingerprint") != vocab_fingerprint:
        words, theirs = len(meta.get("vocab_itos", [])), meta.get("vocab_fingerprint")
        return f"its vocabulary ({words} words, id {theirs}) is not the corpus' (id {vocab_fingerprint})"
    if meta.get("corpus_key") not in (None, corpus_key):
        return f"it was trained on corpus {meta['corpus_key']}, not {corpus_key} (the files changed)"
    return None


def resolve_resume(cfg: DictConfig) -> bool:
    """With `resume: auto` and no `ckpt_path`, point `cfg` at this run's interrupted predecessor: its run
    directory and checkpoint. True when it did (the caller checks the corpus, see `keep_resume`)."""
    share_with_ddp_children([])  # nothing carried over from a previous job of the same multirun
    if cfg.get("ckpt_path") or str(cfg.get("resume")).lower() != "auto" or not cfg.get("train"):
        return False
    output_dir = Path(cfg.paths.output_dir)
    found = None
    if not is_finished(output_dir) and (own := latest_checkpoint(output_dir)) is not None:
        found = (output_dir, own)  # requeued into the same directory
    elif HydraConfig.initialized():
        task_dir = Path(cfg.paths.log_dir) / str(cfg.task_name)
        found = find_interrupted_run(task_dir, list(HydraConfig.get().overrides.task), output_dir)
    if found is None:
        return False
    run_dir, checkpoint = found
    log.info("resuming the interrupted run in %s from %s", run_dir, checkpoint.name)
    _point_at(cfg, run_dir, checkpoint)
    return True


def _point_at(cfg: DictConfig, run_dir: Path, checkpoint: Path | None) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.ckpt_path = None if checkpoint is None else str(checkpoint)
    # DDP ranks that Lightning starts later must continue the same run from the same checkpoint
    share_with_ddp_children(
        [] if checkpoint is None else [f'paths.output_dir="{run_dir}"', f'ckpt_path="{checkpoint}"', "resume=false"]
    )


def keep_resume(
    cfg: DictConfig, checkpoint: dict[str, Any], auto: bool, job_dir: Path, corpus: tuple[str, str]
) -> bool:
    """Whether the resume `cfg` points at may go on with the corpus prepared now (`corpus`: key and vocabulary
    fingerprint). An auto-resume that may not turns into a fresh run in `job_dir` (one warning); an explicit
    `ckpt_path` is a one-line error."""
    reason = check_corpus(checkpoint, *corpus)
    if reason is None:
        return True
    if not auto:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} cannot continue on this corpus: {reason}; train afresh without ckpt_path "
            "(and resume=false), or use the corpus and vocabulary settings it was trained with"
        )
    log.warning("not resuming %s: %s; starting a new run in %s", cfg.paths.output_dir, reason, job_dir)
    _point_at(cfg, job_dir, None)
    return False
