"""`nslm-report` on runs cut into different numbers of frequency buckets (numeric order, by name, one
warning), the one home of the in-batch k rule, and the bench's config module (no import cycle)."""

from __future__ import annotations

import ast
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nslm.report_plots
from nslm.bench.tables import ddp_table
from nslm.report import report
from nslm.run_record import bucket_order, draws_k, negatives_label, run_label
from tests.helpers import REPO

CONFIG = {"loss": {"_target_": "nslm.losses.FullSoftmaxLoss"}, "data": {"corpus": {"_target_": "x.Tiny"}}}


def _record(test_ppl: float, buckets: dict[str, float]) -> dict:
    """A completed results.json holding the given `test/ppl_bucket_<b>` figures (every bucket with words)."""
    described = [{"bucket": name, "words": 1, "train_token_share": 0.1} for name in buckets]
    return {
        "status": "completed", "val/ppl": test_ppl, "test/ppl": test_ppl, "vocab_size": 50, "wall_seconds": 60.0,
        "history": [{"epoch": 0, "seconds": 60.0, "val/ppl": test_ppl}], "config": CONFIG,
        "frequency_buckets": described, **{f"test/ppl_{name}": value for name, value in buckets.items()},
    }  # fmt: skip


# three runs of one corpus and V with 1, 4 and 12 buckets; two of them share a legend label (same loss).
# Values: 100 x (run number) + bucket index, unk = 100 x (run number) + 99, so every point names its place.
TWELVE = {f"bucket_{b}": 300.0 + b for b in range(12)} | {"bucket_unk": 399.0}
RUNS = {
    "one": _record(150.0, {"bucket_0": 100.0, "bucket_unk": 199.0}),
    "four": _record(250.0, {f"bucket_{b}": 200.0 + b for b in range(4)} | {"bucket_unk": 299.0}),
    "twelve": _record(350.0, TWELVE),
}
ORDER = [f"bucket_{b}" for b in range(12)] + ["bucket_unk"]  # written out by hand: numbers, then unk


def test_bucket_names_sort_by_number_with_unk_last():
    shuffled = ["bucket_unk", "bucket_10", "bucket_2", "bucket_0", "bucket_11", "bucket_1", "bucket_2"]
    assert bucket_order(shuffled) == ["bucket_0", "bucket_1", "bucket_2", "bucket_10", "bucket_11", "bucket_unk"]
    metrics = ["test/ppl_bucket_unk", "test/ppl_bucket_10", "test/ppl_bucket_9"]
    assert bucket_order(metrics) == ["test/ppl_bucket_9", "test/ppl_bucket_10", "test/ppl_bucket_unk"]


def test_report_orders_bucket_columns_by_number_and_draws_each_run_at_its_own_buckets(tmp_path, capsys, monkeypatch):
    for name, record in RUNS.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "results.json").write_text(json.dumps(record))
    figures, save = {}, nslm.report_plots._save

    def keep(figure, path: Path) -> Path:  # the figure itself too, to read its lines back
        figures[path.name] = figure
        return save(figure, path)

    monkeypatch.setattr(nslm.report_plots, "_save", keep)
    report([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])

    # the table: bucket columns 0, 1, ..., 11, unk (not 0, 1, 10, 11, 2, ...), each run in its own
    header = next(csv.reader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    assert [column for column in header if column.startswith("test ppl ")] == [
        f"test ppl {name.removeprefix('bucket_')}" for name in ORDER
    ]
    rows = {row["run"]: row for row in csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text()))}
    assert rows["four"]["test ppl 3"] == "203.0" and rows["four"]["test ppl 4"] == ""
    assert rows["one"]["test ppl unk"] == "199.0"
    markdown_header = (tmp_path / "out" / "report.md").read_text().splitlines()[0]
    assert "| test ppl 9 | test ppl 10 | test ppl 11 | test ppl unk |" in markdown_header

    # one warning line for the mixed bucket counts, naming a run of each
    warnings = [line for line in capsys.readouterr().err.splitlines() if "frequency buckets" in line]
    assert warnings == [
        "nslm-report: warning: runs use different numbers of frequency buckets (1 in one, 4 in four, 12 in twelve): "
        "bucket_<b> holds different words per run"
    ]

    # the plot: x positions are the union of names in bucket order (0..11 at 0..11, unk at 12)
    axis = figures["ppl_by_frequency.png"].axes[0]
    assert [tick.get_text() for tick in axis.get_xticklabels()] == [name.removeprefix("bucket_") for name in ORDER]
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axis.get_lines()}
    # all three share the method label FullSoftmaxLoss, so each legend entry adds its run directory
    assert lines == {
        "FullSoftmaxLoss (one)": ([0, 12], [100.0, 199.0]),
        "FullSoftmaxLoss (four)": ([0, 1, 2, 3, 12], [200.0, 201.0, 202.0, 203.0, 299.0]),
        "FullSoftmaxLoss (twelve)": ([*range(12), 12], [*(300.0 + b for b in range(12)), 399.0]),
    }
    assert [text.get_text() for text in axis.get_legend().get_texts()] == list(lines)


def test_runs_with_one_bucket_count_raise_no_warning(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "results.json").write_text(json.dumps(RUNS["twelve"]))
    report([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-plots"])
    assert "frequency buckets" not in capsys.readouterr().err


def test_in_batch_negatives_have_no_k_in_labels_reports_and_bench_tables(tmp_path):
    assert [draws_k(name) for name in ("unigram", "in_batch", "InBatchSampler", None)] == [True, False, False, True]
    assert negatives_label("unigram", 64) == 64 and negatives_label("in_batch", 64) == "batch"
    assert run_label("nce", "in_batch", 64) == "nce+in_batch" and run_label("nce", "unigram", 64) == "nce+unigram k=64"
    # a run without Hydra's record: objective and sampler come from class names, k still "batch"
    record = {**RUNS["one"], "config": {**CONFIG, "loss": {"_target_": "nslm.losses.NCELoss", "num_negatives": 64},
                                        "sampler": {"_target_": "nslm.samplers.InBatchSampler"}}}  # fmt: skip
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "results.json").write_text(json.dumps(record))
    (run,) = report([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-plots"])["runs"]
    assert (run.loss, run.sampler, run.k) == ("NCELoss", "InBatchSampler", "batch")
    row = {"ranks": 2, "vocab_size": 1000, "objective": "neg", "sampler": "in_batch", "k": None, "sync": "sparse",
           "median_step_s": 0.01, "tokens_per_sec": 1e5, "bytes_sent_per_step": 1e6,
           "dense_allreduce_bytes_per_step": 2e6}  # fmt: skip
    assert "| 1,000 | neg | in_batch | batch | sparse |" in ddp_table([row])[-1]


def test_the_bench_config_has_its_own_module_and_ddp_does_not_import_the_cli():
    imported = set()
    for node in ast.walk(ast.parse((REPO / "src/nslm/bench/ddp.py").read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert "nslm.bench.config" in imported and "nslm.bench.cli" not in imported
    check = "import sys, nslm.bench.ddp; assert 'nslm.bench.cli' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", check], cwd=REPO).returncode == 0


@pytest.mark.parametrize("module", ["nslm.bench.cli", "nslm.bench.ddp"])
def test_both_bench_entry_points_compose_the_shared_config(module):
    from nslm.bench import config

    assert __import__(module, fromlist=["compose_config"]).compose_config is config.compose_config
