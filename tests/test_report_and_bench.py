"""`nslm-report` on a real sweep (table, CSV, plots) and `nslm-bench` on a small grid (rows, time split,
memory, the headline checks)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from nslm.bench.cli import run as run_bench
from nslm.report import report
from tests.helpers import REPO, run_train_cli

PNG = b"\x89PNG\r\n\x1a\n"
SYNTHETIC = [
    "data=synthetic",
    "data.vocab_size=200",
    "data.num_classes=8",
    "data.train_tokens=6000",
    "data.valid_tokens=1500",
    "data.test_tokens=1500",
    "data.batch_size=4",
    "data.bptt=8",
    "model.net.embedding_dim=16",
    "model.net.hidden_dim=16",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks=none",
]


@pytest.fixture(scope="module")
def sweep_and_baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    sweep = run_train_cli(
        "-m", *SYNTHETIC, "loss=sampled_softmax", "sampler=unigram,uniform", "loss.num_negatives=8,32",
        f"paths.log_dir={root / 'logs'}", f"hydra.sweep.dir={root / 'sweep'}",
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    full = run_train_cli(*SYNTHETIC, "loss=full", f"hydra.run.dir={root / 'full'}", f"paths.log_dir={root / 'logs'}")
    assert full.returncode == 0, full.stderr[-3000:]
    return root


def test_report_tables_and_plots_a_sweep_beside_its_baseline(sweep_and_baseline, tmp_path, capsys):
    root = sweep_and_baseline
    done = report([str(root / "sweep"), str(root / "full"), "--out", str(tmp_path)])
    runs = done["runs"]
    assert len(runs) == 5
    assert {(run.loss, run.sampler, run.k) for run in runs} == {
        ("full", "", None),
        *{("sampled_softmax", sampler, k) for sampler in ("unigram", "uniform") for k in (8, 32)},
    }
    test_ppl = [run.test_ppl for run in runs]
    assert test_ppl == sorted(test_ppl)  # sorted by test ppl (the default)
    for run in runs:
        results = json.loads(next(root.rglob(f"{run.run.split('/')[-1]}/results.json")).read_text())
        assert run.val_ppl == results["val/ppl"] and run.val_ppl_over_oracle == results["val/ppl_over_oracle"]

    printed = capsys.readouterr().out
    assert printed == (tmp_path / "report.md").read_text()
    header = "| run | corpus | V | loss | sampler | k | val ppl | test ppl | val/oracle"
    assert printed.splitlines()[0].startswith(header)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert [float(row["test_ppl"]) for row in rows] == pytest.approx(test_ppl)
    for name in ("val_ppl_vs_k", "val_ppl_vs_time"):
        assert done["written"][name].read_bytes().startswith(PNG)


def test_report_errors_are_one_line(tmp_path):
    for args, message in (
        ([str(tmp_path / "missing")], "is not a directory"),
        ([str(tmp_path)], "no results.json or bench.json under"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", "from nslm.report import main; main()", *args],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_bench_times_every_row_splits_the_step_and_reports_memory(tmp_path):
    bench = run_bench(
        ["--vocab-sizes", "500,3000", "--ks", "16,64", "--objectives", "sampled_softmax,neg",
         "--samplers", "unigram,in_batch", "--steps", "3", "--rounds", "1", "--trainer-steps", "4",
         "--out", str(tmp_path)]
    )  # fmt: skip
    rows = bench["rows"]
    # per V: the bare loop, exact softmax (chunked and plain), adaptive softmax, 2 objectives x (unigram at
    # 2 k + in_batch once)
    assert len(rows) == 2 * (4 + 2 * 3)
    assert {row["objective"] for row in rows} >= {"full", "full (plain)", "adaptive"}
    for row in rows:
        assert row["tokens_per_sec"] > 0 and row["peak_rss_mb"] > 0 and row["steps_timed"] == 3
        if row["objective"] != "bare PyTorch loop":
            split = row["split_s"]
            assert set(split) == {"lstm", "loss", "sampling", "optimizer"}
            assert sum(split.values()) == pytest.approx(row["median_step_s"], rel=0.5)
            assert (split["sampling"] > 0) == (row["sampler"] is not None)
        reference = next(r for r in rows if r["vocab_size"] == row["vocab_size"] and r["objective"] == "full")
        assert row["vs_full"] == pytest.approx(row["tokens_per_sec"] / reference["tokens_per_sec"])
    assert {row["k"] for row in rows if row["sampler"] == "in_batch"} == {None}
    check = bench["trainer_vs_bare"]
    assert check["vocab_size"] == 500 and len(check["rounds"]) == 1 and check["median_speed_ratio"] > 0

    written = json.loads((tmp_path.glob("*/bench.json").__next__()).read_text())
    assert written["rows"] == json.loads(json.dumps(rows))
    markdown = next(tmp_path.glob("*/bench.md")).read_text()
    assert "vs the bare PyTorch loop at V=500" in markdown and "| neg | in_batch | batch |" in markdown
    # the report plots tokens/s against V from the bench's rows
    plotted = report([str(tmp_path), "--out", str(tmp_path / "report")])
    assert plotted["written"]["tokens_per_sec_vs_vocab"].read_bytes().startswith(PNG)


def test_bench_rejects_unknown_names():
    with pytest.raises(SystemExit):
        run_bench(["--samplers", "zipf"])


GOOD_RUN = {
    "status": "completed",
    "val/ppl": 120.0,
    "test/ppl": 115.0,
    "vocab_size": 50,
    "wall_seconds": 90.0,
    "history": [{"epoch": 0, "seconds": 45.0, "val/ppl": 150.0}, {"epoch": 1, "seconds": 90.0, "val/ppl": 120.0}],
    "config": {"loss": {"_target_": "nslm.losses.FullSoftmaxLoss"}, "data": {"corpus": {"_target_": "x.Tiny"}}},
}
BAD_FILES = {  # file -> (content, what the warning must say)
    "list/results.json": ("[1, 2]", "holds a list, not an object"),
    "config/results.json": (json.dumps({**GOOD_RUN, "config": "oops"}), '"config" is a string, not an object'),
    "history/results.json": (
        json.dumps({**GOOD_RUN, "history": [{"epoch": 0, "val/ppl": 150.0}]}),
        'history entry 0 lacks a numeric "seconds"',
    ),
    "truncated/results.json": (json.dumps(GOOD_RUN)[:40], "is not valid JSON"),
    "bench-a/bench.json": ("{", "is not valid JSON"),
    "bench-b/bench.json": (json.dumps({"rows": [{"k": 8}]}), "row 0 lacks vocab_size, tokens_per_sec"),
}


def _write(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_report_skips_each_damaged_file_with_one_warning(tmp_path, capsys):
    runs = tmp_path / "runs"
    _write(runs, {"good/results.json": json.dumps(GOOD_RUN), **{n: text for n, (text, _) in BAD_FILES.items()}})
    done = report([str(runs), "--out", str(tmp_path / "out")])
    assert [run.run for run in done["runs"]] == ["good"]
    warnings = capsys.readouterr().err.splitlines()
    warnings = [line for line in warnings if line.startswith("nslm-report: warning: skipping ")]
    assert len(warnings) == len(BAD_FILES)
    for name, (_, problem) in BAD_FILES.items():
        assert any(str(runs / name) in line and problem in line for line in warnings), (name, warnings)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "report.csv",
        "report.md",
        "val_ppl_vs_time.png",
    ]


def test_report_of_only_damaged_files_is_one_line_and_writes_nothing(tmp_path):
    _write(tmp_path / "runs", {n: text for n, (text, _) in BAD_FILES.items()})
    command = [sys.executable, "-c", "from nslm.report import main; main()", str(tmp_path / "runs")]
    done = subprocess.run([*command, "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if not line.startswith("nslm-report: warning:")]
    assert len(errors) == 1 and errors[0].startswith("nslm-report: error: no usable results.json or bench.json")
    assert not (tmp_path / "out").exists()


def test_a_failure_while_drawing_leaves_no_partial_report(tmp_path, monkeypatch):
    _write(tmp_path / "runs", {"good/results.json": json.dumps(GOOD_RUN)})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("the previous report\n")

    def broken(*args):
        raise RuntimeError("matplotlib broke")

    monkeypatch.setattr("nslm.report_plots.val_ppl_vs_time", broken)
    with pytest.raises(RuntimeError, match="matplotlib broke"):
        report([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.md"]  # the old one, untouched
    assert (tmp_path / "out" / "report.md").read_text() == "the previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]  # no staging directory left
