"""`summary.csv` for a Hydra multirun: one row per finished job, failed ones included.

Each job writes `results.json` in its own directory (`status: completed`, or `failed` with the error).
After every job this Hydra callback rebuilds `<sweep dir>/summary.csv` from all of them, written to a
temporary name and renamed: a job that fails, or a sweep killed half-way, never erases the rows of the
jobs that finished. Registered in `conf/hydra/default.yaml`.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from nslm.run_record import bucket_order, read_results, run_overrides, status_of, write_failed
from nslm.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

COLUMNS = [
    "job",
    "status",
    "swept",  # the overrides that differ between the sweep's jobs, e.g. `loss=nce loss.num_negatives=16`
    "val/ppl",
    "test/ppl",
    "val/ppl_over_oracle",  # data=synthetic only
    "test/ppl_over_oracle",
    "train/tokens_per_sec",
    "wall_seconds",
    "epochs",
    "global_step",
    "output_dir",
    "error",
    "overrides",  # all of the job's command-line overrides
]


def summary_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows, overrides = [], []
    for results_file in sweep_dir.glob("*/results.json"):
        job_dir = results_file.parent
        results = read_results(job_dir)
        if results is None:
            continue
        row = {column: results.get(column) for column in COLUMNS}
        row.update({name: value for name, value in results.items() if name.startswith("test/ppl_bucket_")})
        row.update(job=job_dir.name, status=status_of(results))
        row["output_dir"] = results.get("output_dir", str(job_dir))
        rows.append(row)
        overrides.append(run_overrides(job_dir) or [])
    shared = set.intersection(*(set(items) for items in overrides)) if overrides else set()
    for row, items in zip(rows, overrides, strict=True):
        row["overrides"] = " ".join(items)
        row["swept"] = " ".join(item for item in items if item not in shared)
    return sorted(rows, key=lambda row: (not row["job"].isdigit(), int(row["job"]) if row["job"].isdigit() else 0))


def write_summary(sweep_dir: Path) -> Path:
    rows = summary_rows(sweep_dir)
    buckets = bucket_order({name for row in rows for name in row if name.startswith("test/ppl_bucket_")})
    columns = (
        COLUMNS[: COLUMNS.index("train/tokens_per_sec")] + buckets + COLUMNS[COLUMNS.index("train/tokens_per_sec") :]
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "summary.csv", buffer.getvalue())
    return sweep_dir / "summary.csv"


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED and read_results(job_dir) is None:
            # failed before nslm could record it (e.g. while composing or instantiating)
            write_failed(job_dir, str(job_return._return_value))
        write_summary(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_summary(Path(config.hydra.sweep.dir))
        log.info("sweep summary: %s", path)
