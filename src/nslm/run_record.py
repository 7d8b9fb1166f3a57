"""The run record: `<run dir>/results.json`, the one file that says how an `nslm-train` run ended.

Written (atomically) in exactly three shapes, read by auto-resume, the sweep summary and `nslm-report`:

    completed     every figure of the run (`RunResults` below); written once, at the end
    failed        {"status", "error", "output_dir"}: the job raised (a sweep lists it and goes on)
    interrupted   {"status", "signal", "checkpoint", "global_step", "output_dir"}: preempted; the same
                  command resumes it from `checkpoint`

A run killed outright (SIGKILL, a node lost) leaves no record, or the one of an earlier segment; auto-resume
treats every run that is not `completed` as unfinished. A record written before `status` existed counts
as completed. Besides the record, a run directory holds Hydra's `.hydra/overrides.yaml` (the command line
that started it) and `.hydra/hydra.yaml` (the config-group choices), read here too.

`nslm-eval` writes `eval.json`, not this file: an evaluation is not a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

from omegaconf import OmegaConf

from nslm.utils.atomic import atomic_write_json

RESULTS_FILE = "results.json"
COMPLETED, FAILED, INTERRUPTED = "completed", "failed", "interrupted"

#: the completed record; keys are the metric names every logger uses
RunResults = TypedDict(
    "RunResults",
    {
        "status": str,
        "val/ppl": "float | None",  # exact val ppl of the best checkpoint (the last validation without one)
        "val/ppl_last": "float | None",
        "test/ppl": "float | None",  # exact test ppl of the best checkpoint
        "train/tokens_per_sec": float,
        "train/median_step_seconds": "float | None",
        "wall_seconds": float,  # this command plus the fit time of earlier segments of a resumed run
        "epochs": int,
        "global_step": int,
        "num_parameters": int,
        "vocab_size": int,
        "best_checkpoint": str,
        "history": list,  # one entry per validation: epoch, step, seconds, objective, val/ppl (+ buckets)
        "frequency_buckets": list,  # what each test/ppl_bucket_<b> holds: words, share of training tokens
        "resumed_from": "str | None",
        "output_dir": str,
        "config": dict,
    },
    total=False,  # + test/ppl_bucket_<b>; data=synthetic adds val/test ppl_over_oracle and oracle_ppl
)


def write_completed(directories: list[Path], results: RunResults) -> None:
    """The final record, in every directory given (a resumed run reports in its own and the job's)."""
    record = {**results, "status": COMPLETED}
    for directory in dict.fromkeys(directories):
        atomic_write_json(Path(directory) / RESULTS_FILE, record)


def write_failed(run_dir: Path, error: BaseException | str) -> None:
    """A failed job's record; never replaces a completed one."""
    if is_finished(run_dir):
        return
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    atomic_write_json(run_dir / RESULTS_FILE, {"status": FAILED, "error": message, "output_dir": str(run_dir)})


def write_interrupted(run_dir: Path, signal_name: str, checkpoint: Path | None, global_step: int) -> None:
    """A preempted run's record: where it stopped and what the same command resumes from (None: nothing yet)."""
    record = {
        "status": INTERRUPTED,
        "signal": signal_name,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "global_step": global_step,
        "output_dir": str(run_dir),
    }
    atomic_write_json(run_dir / RESULTS_FILE, record)


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """The run's record; None when it is missing, unreadable or not a JSON object (a run killed early)."""
    try:
        record = json.loads((Path(run_dir) / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def status_of(record: dict[str, Any] | None) -> str | None:
    """`completed`, `failed`, `interrupted`, or None without a record. Records older than the `status`
    field were only ever written by finished runs."""
    if record is None:
        return None
    return str(record.get("status", COMPLETED))


def is_finished(run_dir: Path) -> bool:
    return status_of(read_results(run_dir)) == COMPLETED


def run_overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides Hydra recorded in `<run_dir>/.hydra/overrides.yaml`."""
    try:
        return [str(item) for item in OmegaConf.load(Path(run_dir) / ".hydra" / "overrides.yaml")]
    except Exception:  # missing or unreadable
        return None


def run_choices(run_dir: Path) -> dict[str, str]:
    """The config-group options a Hydra run was composed from (`loss: nce`, `sampler: unigram`, ...)."""
    try:
        choices = OmegaConf.load(Path(run_dir) / ".hydra" / "hydra.yaml").hydra.runtime.choices
    except Exception:  # not started by Hydra, or the file is gone
        return {}
    return {str(key): str(value) for key, value in choices.items() if value is not None}


def bucket_order(names: Iterable[str]) -> list[str]:
    """Frequency-bucket names (`bucket_0` most frequent ... `bucket_unk`; nslm.metrics), each once, in
    bucket order: by number, not as text (`bucket_10` after `bucket_9`), `bucket_unk` last. Metric names
    (`test/ppl_bucket_<b>`) sort the same way."""

    def key(name: str) -> tuple[bool, bool, int, str]:
        index = name.rsplit("bucket_", 1)[-1]
        return index == "unk", not index.isdigit(), int(index) if index.isdigit() else 0, name

    return sorted(set(names), key=key)


def bucket_count(record: dict[str, Any]) -> int | None:
    """How many frequency buckets (besides `<unk>`) a completed record's run cut its words into: its
    `frequency_buckets` rows that hold words (records before consecutive numbering also listed empty
    ones), else its numbered `test/ppl_bucket_<b>` figures; None without either."""
    rows = record.get("frequency_buckets")
    if isinstance(rows, list) and rows:
        return sum(
            1 for row in rows if isinstance(row, dict) and row.get("bucket") != "bucket_unk" and row.get("words") != 0
        )
    numbered = [name for name in record if name.startswith("test/ppl_bucket_") and name != "test/ppl_bucket_unk"]
    return len(numbered) or None


#: in-batch negatives, by config-group option or class name (a run without Hydra's record): the batch's
#: own targets are the negatives, so the run has no k of its own
IN_BATCH = ("in_batch", "InBatchSampler")


def draws_k(sampler: str | None) -> bool:
    """Whether `sampler` draws a chosen number k of negatives (every sampler but in-batch)."""
    return sampler not in IN_BATCH


def negatives_label(sampler: str | None, k: int | None) -> int | str | None:
    """The k reports and benchmarks show for a sampled objective: k, or `"batch"` for in-batch negatives
    (the batch decides how many; a k left in the config does not apply)."""
    return k if draws_k(sampler) else "batch"


def run_label(loss: str, sampler: str | None = None, k: int | None = None, sep: str = "+") -> str:
    """How nslm names an objective everywhere (reports, benchmarks, W&B): `full`, `nce+unigram k=1024`,
    `sampled_softmax+in_batch` (in-batch negatives have no k: `negatives_label`). `sep="-"` gives the
    slug form W&B run names use: `nce-unigram-k1024`."""
    if loss in ("full", "adaptive") or not sampler:
        return loss
    with_k = k is not None and draws_k(sampler)
    if sep == "+":
        return f"{loss}+{sampler}" + (f" k={k}" if with_k else "")
    return sep.join([loss, sampler, *([f"k{k}"] if with_k else [])])
