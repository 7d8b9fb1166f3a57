"""Find the checkpoint an interrupted run should continue from.

`resume: auto` (the default) makes a restarted command pick up its own interrupted run: the newest
checkpoint of a run directory under `${paths.log_dir}/${task_name}` started with the same command-line
overrides that has not finished (`results.json` missing or not `completed`). The resumed run keeps
writing into that directory, so the interrupted run simply completes. This is what a SLURM requeue, a
preempted job or a killed sweep job needs: the same command, nothing to edit.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nslm.run_dirs import read_results, run_overrides

log = logging.getLogger(__name__)

#: checkpoints that hold the latest training state: end of epoch (`last`) and every N steps (`last-step`);
#: plus Lightning's `hpc_ckpt_<n>.ckpt`, saved in the run directory when SLURM signals a requeue
RESUMABLE = ("checkpoints/last.ckpt", "checkpoints/last-step.ckpt", "hpc_ckpt_*.ckpt")
#: overrides that say how to resume, not what to train: they do not make a different run
_NEUTRAL_KEYS = ("ckpt_path", "resume", "hydra.", "paths.output_dir")


def latest_checkpoint(run_dir: Path) -> Path | None:
    existing = [path for pattern in RESUMABLE for path in run_dir.glob(pattern) if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else None


def is_finished(run_dir: Path) -> bool:
    results = read_results(run_dir)
    return results is not None and results.get("status", "completed") == "completed"


def _significant(overrides: list[str]) -> list[str]:
    return sorted(item for item in overrides if not item.lstrip("+~").startswith(_NEUTRAL_KEYS))


def find_interrupted_run(task_dir: Path, overrides: list[str], current_dir: Path) -> tuple[Path, Path] | None:
    """(run dir, checkpoint) of the newest unfinished run of `task_dir` with these overrides, if any."""
    wanted = _significant(overrides)
    best: tuple[float, Path, Path] | None = None
    for hydra_dir in [*task_dir.glob("runs/*/.hydra"), *task_dir.glob("multiruns/*/*/.hydra")]:
        run_dir = hydra_dir.parent
        if run_dir.resolve() == current_dir.resolve() or is_finished(run_dir):
            continue
        checkpoint = latest_checkpoint(run_dir)
        recorded = run_overrides(run_dir)
        if checkpoint is None or recorded is None or _significant(recorded) != wanted:
            continue
        mtime = checkpoint.stat().st_mtime
        if best is None or mtime > best[0]:
            best = (mtime, run_dir, checkpoint)
    return None if best is None else (best[1], best[2])
