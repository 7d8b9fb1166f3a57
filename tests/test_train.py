"""End to end through Hydra: compose, train, test, results.json, logged metric names."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nslm.train import train
from tests.helpers import compose_train, run_train_cli, tiny_overrides

RESULT_KEYS = {"val/ppl", "test/ppl", "train/tokens_per_sec", "wall_seconds", "epochs", "num_parameters", "config"}


def test_fast_dev_run_through_hydra_compose(tiny_corpus, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_corpus), "debug=fdr"], tmp_path)
    results = train(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved.keys() >= RESULT_KEYS
    assert saved["num_parameters"] == results["num_parameters"] > 0
    assert saved["config"]["model"]["net"]["vocab_size"] == results["vocab_size"]
    assert math.isfinite(saved["test/ppl"]) and saved["train/tokens_per_sec"] > 0


def test_short_training_writes_checkpoints_results_and_metrics(tiny_corpus, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_corpus), "trainer.max_epochs=2", "trainer.log_every_n_steps=1"], tmp_path)
    results = train(cfg)
    assert results["epochs"] == 2
    assert Path(results["best_checkpoint"]).is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    with open(tmp_path / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0])
    assert {"train/loss", "train/ppl", "train/tokens_per_sec", "lr", "val/ppl", "val/loss", "test/ppl"} <= columns
    val = [float(r["val/ppl"]) for r in rows if r["val/ppl"]]
    assert len(val) == 2 and results["val/ppl"] == pytest.approx(min(val), rel=1e-6)


def unigram_ppl(cache, split: str) -> float:
    counts = np.asarray(cache.vocab.counts, dtype=np.float64)
    logp = np.log(np.maximum(counts, 0.5) / counts.sum())
    return float(np.exp(-logp[np.asarray(cache.tokens(split), dtype=np.int64)].mean()))


def test_short_ptb_training_beats_the_unigram_model(ptb_dir, tmp_path):
    """200 windows (140k tokens, ~15 s) of a 1x128 LSTM with Adam: exact val ppl far under unigram's."""
    cfg = compose_train(
        [
            "experiment=ptb_example",
            "model/optimizer=adam",
            "model.optimizer.lr=0.005",
            "model/scheduler=none",
            "model.net.embedding_dim=128",
            "model.net.hidden_dim=128",
            "model.net.num_layers=1",
            "model.net.dropout=0",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=200",
            "test=false",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
        ],
        tmp_path,
    )
    results = train(cfg)
    from hydra.utils import instantiate

    unigram = unigram_ppl(instantiate(cfg.data).cache, "valid")
    assert 600 < unigram < 800  # PTB's unigram perplexity
    assert results["val/ppl"] < 0.65 * unigram, (results["val/ppl"], unigram)


def test_cli_runs_and_reports_bad_input_in_one_line(tiny_corpus, tmp_path):
    overrides = [o for o in tiny_overrides(tiny_corpus)]
    done = run_train_cli(*overrides, "debug=fdr", f"hydra.run.dir={tmp_path / 'ok'}", "print_config=false")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "ok" / "results.json").is_file()
    bad = [o.replace(str(tiny_corpus["valid"]), str(tmp_path / "missing.txt")) for o in overrides]
    failed = run_train_cli(*bad, "debug=fdr", f"hydra.run.dir={tmp_path / 'bad'}", "print_config=false")
    assert failed.returncode == 2
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("nslm-train: error:")]
    assert len(error_lines) == 1 and "data.valid_path" in error_lines[0] and "Traceback" not in failed.stderr
    # the run is recorded as failed (a sweep's summary lists it), with the same message
    failure = json.loads((tmp_path / "bad" / "results.json").read_text())
    assert failure["status"] == "failed" and "data.valid_path" in failure["error"]
