"""`nslm-report <dirs>`: compare runs and sweeps as a table (markdown + CSV) and plots (PNG).

    nslm-report outputs/quality_ptb outputs/train/multiruns/2026-11-24_10-00-00_000000
    nslm-report outputs/sweep --out reports/sweep --sort test/ppl

Every `results.json` under the given directories is one run (a single run, a sweep's job, a resumed run
counted once); `bench.json` files from `nslm-bench` add their throughput rows to the tokens/s plot.
Writes report.md, report.csv and, where the runs allow, val_ppl_vs_k.png, val_ppl_vs_time.png and
tokens_per_sec_vs_vocab.png into `--out` (default: `<first dir>/report`).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nslm.errors import NslmError, exit_on_user_error
from nslm.report_inputs import BadInput, check_bench, check_results, read_json
from nslm.run_record import bucket_count, bucket_order, negatives_label, run_choices, run_label
from nslm.utils.atomic import TMP_MARK, atomic_write_text


@dataclass
class Run:
    run: str
    status: str
    experiment: str
    corpus: str
    vocab_size: int | None
    loss: str
    sampler: str
    k: int | str | None
    val_ppl: float | None
    test_ppl: float | None
    val_ppl_over_oracle: float | None
    test_ppl_over_oracle: float | None
    tokens_per_sec: float | None
    wall_minutes: float | None
    epochs: int | None
    history: list[dict] = field(default_factory=list, repr=False)
    output_dir: str = field(default="", repr=False)  # where the run lives (a resumed run reports twice)
    #: test ppl by target-word frequency bucket (`bucket_0` most frequent ... `bucket_unk`; nslm.metrics)
    buckets: dict[str, float] = field(default_factory=dict, repr=False)
    #: how many buckets (besides <unk>) the run cut its words into: runs that differ compare other words
    bucket_count: int | None = field(default=None, repr=False)

    @property
    def method(self) -> str:
        """`full`, or `objective+sampler` (with k where it applies): one line per method in the plots."""
        return run_label(self.loss, self.sampler)

    def minutes_to(self, val_ppl: float) -> float | None:
        """Wall-clock minutes of training until validation first reached `val_ppl` (None: never)."""
        for record in self.history:
            if record.get("val/ppl") is not None and record["val/ppl"] <= val_ppl:
                return record["seconds"] / 60
        return None


def _short_target(node: Any) -> str:
    target = node.get("_target_", "") if isinstance(node, dict) else ""
    return target.rsplit(".", 1)[-1] if isinstance(target, str) else ""


def _node(config: dict, key: str) -> dict:
    """A config section, or {} where a hand-edited results.json holds something else there."""
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def read_run(run_dir: Path, root: Path, results: dict[str, Any]) -> Run | None:
    """The run of a checked results.json (`nslm.report_inputs`); None for one that is not a training run's."""
    if "config" not in results and results.get("status") != "failed":  # e.g. nslm-eval's results
        return None
    config = results.get("config") or {}
    choices = run_choices(run_dir)
    loss = choices.get("loss") or _short_target(config.get("loss"))
    # exact objectives draw nothing: a sampler left in their config (the default group) is not shown
    sampled = loss not in ("full", "FullSoftmaxLoss", "adaptive", "AdaptiveSoftmaxLoss", "")
    sampler = (choices.get("sampler") or _short_target(config.get("sampler"))) if sampled else ""
    k = negatives_label(sampler, _node(config, "loss").get("num_negatives")) if sampled else None
    corpus = choices.get("data") or _short_target(_node(config, "data").get("corpus"))
    wall = results.get("wall_seconds")
    return Run(
        run=str(run_dir.relative_to(root)) if run_dir != root else run_dir.name,
        status=results.get("status", "completed"),
        experiment=choices.get("experiment", ""),
        corpus=corpus,
        vocab_size=results.get("vocab_size"),
        loss=loss,
        sampler=sampler,
        k=k,
        val_ppl=results.get("val/ppl"),
        test_ppl=results.get("test/ppl"),
        val_ppl_over_oracle=results.get("val/ppl_over_oracle"),
        test_ppl_over_oracle=results.get("test/ppl_over_oracle"),
        tokens_per_sec=results.get("train/tokens_per_sec"),
        wall_minutes=wall / 60 if wall is not None else None,
        epochs=results.get("epochs"),
        history=results.get("history") or [],
        output_dir=str(Path(results.get("output_dir") or run_dir).resolve()),
        buckets={
            name.removeprefix("test/ppl_"): value
            for name, value in results.items()
            if name.startswith("test/ppl_bucket_") and isinstance(value, (int, float))
        },
        bucket_count=bucket_count(results),
    )


def warn(message: str) -> None:
    print(f"nslm-report: warning: {message}", file=sys.stderr)


def collect(directories: list[Path]) -> tuple[list[Run], list[dict]]:
    """Runs (each run directory once, also when a resumed run reported in two places) and bench reports.

    A file that cannot be used is skipped with one warning line; an error only if nothing usable is left.
    """
    runs: dict[str, Run] = {}
    benches, skipped = [], 0
    for directory in directories:
        if not directory.is_dir():
            raise NslmError(f"{directory} is not a directory; give nslm-report run or sweep directories")
        for results_file in sorted(directory.rglob("results.json")):
            try:
                run = read_run(results_file.parent, directory, check_results(read_json(results_file)))
            except BadInput as problem:
                warn(f"skipping {results_file}: {problem}")
                skipped += 1
                continue
            if run is not None:
                runs.setdefault(run.output_dir, run)
        for bench_file in sorted(directory.rglob("bench.json")):
            try:
                benches.append(check_bench(read_json(bench_file)))
            except BadInput as problem:
                warn(f"skipping {bench_file}: {problem}")
                skipped += 1
    if not runs and not benches:
        usable = (
            f"no usable results.json or bench.json ({skipped} skipped)" if skipped else "no results.json or bench.json"
        )
        raise NslmError(
            f"{usable} under {', '.join(map(str, directories))}; point nslm-report at "
            "run or sweep directories (e.g. outputs/train/runs/..., outputs/train/multiruns/...)"
        )
    return list(runs.values()), benches


COLUMNS = {
    "run": "run", "experiment": "experiment", "corpus": "corpus", "vocab_size": "V", "loss": "loss",
    "sampler": "sampler", "k": "k", "val_ppl": "val ppl", "test_ppl": "test ppl",
    "val_ppl_over_oracle": "val/oracle", "test_ppl_over_oracle": "test/oracle", "tokens_per_sec": "tokens/s",
    "wall_minutes": "wall-clock min", "epochs": "epochs", "status": "status",
}  # fmt: skip
SORT_KEYS = {"test/ppl": "test_ppl", "val/ppl": "val_ppl", "tokens/s": "tokens_per_sec", "wall": "wall_minutes"}


def _cell(value: Any, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if name.endswith("over_oracle"):
            return f"{value:.3f}"
        return f"{value:,.2f}" if name.endswith("ppl") else f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table_rows(runs: list[Run], sort: str) -> list[Run]:
    key = SORT_KEYS[sort]
    return sorted(runs, key=lambda run: (run.corpus, run.vocab_size or 0, getattr(run, key) is None,
                                         getattr(run, key) or 0))  # fmt: skip


def _bucket_names(runs: list[Run]) -> list[str]:
    return bucket_order(name for run in runs for name in run.buckets)


def warn_on_mixed_buckets(runs: list[Run]) -> None:
    """One warning line when runs cut words into different numbers of frequency buckets: their bucket
    columns (and ppl_by_frequency.png points) share a name but not the words behind it."""
    first_with: dict[int, str] = {}
    for run in runs:
        if run.bucket_count is not None:
            first_with.setdefault(run.bucket_count, run.run)
    if len(first_with) > 1:
        which = ", ".join(f"{count} in {run}" for count, run in sorted(first_with.items()))
        warn(f"runs use different numbers of frequency buckets ({which}): bucket_<b> holds different words per run")


def _row(run: Run, targets: list[float]) -> dict[str, Any]:
    """Every column of one run: the fixed ones, test ppl per frequency bucket, minutes to each target."""
    row = {name: value for name, value in asdict(run).items() if name in COLUMNS}
    row.update({f"test ppl {name.removeprefix('bucket_')}": value for name, value in run.buckets.items()})
    row.update({f"min to val {target:g}": run.minutes_to(target) for target in targets})
    return row


def _headers(runs: list[Run], targets: list[float]) -> list[str]:
    buckets = [f"test ppl {name.removeprefix('bucket_')}" for name in _bucket_names(runs)]
    return [*COLUMNS, *buckets, *(f"min to val {target:g}" for target in targets)]


def markdown_table(runs: list[Run], targets: list[float] = ()) -> str:
    rows = [_row(run, list(targets)) for run in runs]
    used = [name for name in _headers(runs, list(targets)) if any(row.get(name) not in (None, "") for row in rows)]
    lines = ["| " + " | ".join(COLUMNS.get(name, name) for name in used) + " |", "|" + "---|" * len(used)]
    lines += ["| " + " | ".join(_cell(row.get(name), _kind(name)) for name in used) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _kind(name: str) -> str:
    return "ppl" if name.startswith("test ppl ") else name


def csv_table(runs: list[Run], targets: list[float] = ()) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_headers(runs, list(targets)))
    writer.writeheader()
    for run in runs:
        writer.writerow(_row(run, list(targets)))
    return buffer.getvalue()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nslm-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default <first dir>/report)")
    parser.add_argument("--sort", choices=sorted(SORT_KEYS), default="test/ppl")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--time-to",
        type=lambda text: [float(v) for v in text.split(",") if v],
        default=[],
        metavar="PPL[,PPL]",
        help="add 'minutes of training to reach val ppl X' columns, from history",
    )
    return parser.parse_args(argv)


def publish(
    out: Path, runs: list[Run], benches: list[dict], markdown: str, plots: bool, targets: list[float] = ()
) -> dict[str, Path]:
    """Write every file of the report into a staging directory first, then move them into `out`: a
    failure while drawing leaves no partial report behind (and an older report in `out` as it was)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP_MARK}", dir=out.parent))
    try:
        staged = {}
        if runs:
            staged["markdown"] = staging / "report.md"
            staged["csv"] = staging / "report.csv"
            atomic_write_text(staged["markdown"], markdown)
            atomic_write_text(staged["csv"], csv_table(runs, targets))
        if plots:
            from nslm.report_plots import write_plots  # matplotlib only when plotting

            staged.update(write_plots(runs, benches, staging))
        if staged:
            out.mkdir(parents=True, exist_ok=True)
        written = {}
        for name, path in staged.items():
            written[name] = out / path.name
            os.replace(path, written[name])
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def report(argv: list[str] | None = None) -> dict[str, Any]:
    """Write the report `argv` asks for; return what was written (paths) and the runs."""
    args = parse_args(argv)
    runs, benches = collect(args.dirs)
    out = args.out or args.dirs[0] / "report"
    ordered = table_rows(runs, args.sort)
    warn_on_mixed_buckets(ordered)
    markdown = markdown_table(ordered, args.time_to) if ordered else ""
    written = publish(out, ordered, benches, markdown, plots=not args.no_plots, targets=args.time_to)
    print(markdown, end="")
    for name, path in written.items():
        print(f"{name}: {path}", file=sys.stderr)
    return {"written": written, "runs": ordered}


def main() -> None:
    try:
        report()
    except Exception as err:
        exit_on_user_error("nslm-report", err)
