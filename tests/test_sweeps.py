"""Hydra multiruns: per-job results, the sweep's summary.csv, failed jobs, W&B runs grouped per sweep,
and an Optuna search. Every run here is a real `nslm-train` process on a tiny corpus."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from tests.helpers import run_train_cli, tiny_overrides
from tests.wandb_reader import read_offline_run


def read_summary(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as handle:
        return list(csv.DictReader(handle))


def test_grid_sweep_writes_results_summary_and_one_wandb_group(tiny_corpus, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_train_cli(
        "-m",
        *tiny_overrides(tiny_corpus),
        "loss=sampled_softmax,nce",
        "loss.num_negatives=8,16",
        "sampler=unigram",
        "logger=wandb",
        "trainer.max_epochs=1",
        "callbacks=none",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    results = [json.loads((job / "results.json").read_text()) for job in jobs]
    assert all(r["status"] == "completed" and r["val/ppl"] > 1 for r in results)

    rows = read_summary(sweep)
    assert [row["job"] for row in rows] == ["0", "1", "2", "3"]
    assert {row["status"] for row in rows} == {"completed"}
    assert {row["swept"] for row in rows} == {
        f"loss={loss} loss.num_negatives={k}" for loss in ("sampled_softmax", "nce") for k in (8, 16)
    }
    for row, result in zip(rows, results, strict=True):
        assert float(row["val/ppl"]) == result["val/ppl"]

    runs = [read_offline_run(next((job / "wandb").glob("offline-run-*"))) for job in jobs]
    names = [run.name for run in runs]
    assert len(set(names)) == 4, names
    assert names[0] == "sampled_softmax-unigram-k8-text_files#0"
    groups = {run.group for run in runs}
    assert len(groups) == 1 and groups.pop() == f"train-{sweep.name}"
    for run, result in zip(runs, results, strict=True):
        assert run.job_type == "train"
        assert {"unigram", "text_files", f"k={result['config']['loss']['num_negatives']}"} <= set(run.tags)
        assert run.config["loss"]["num_negatives"] == result["config"]["loss"]["num_negatives"]
        assert run.config["model"]["net"]["vocab_size"] == result["vocab_size"]
        val_ppl = [row["val/ppl"] for row in run.history if "val/ppl" in row]
        assert val_ppl and abs(val_ppl[-1] - result["val/ppl"]) < 1e-6 * result["val/ppl"]
        assert run.exit_code == 0  # wandb.finish() closed every job's run


def test_a_failing_job_is_recorded_and_the_others_are_kept(tiny_corpus, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_train_cli(
        "-m",
        *tiny_overrides(tiny_corpus),
        "loss=sampled_softmax",
        "loss.unique=true",
        "loss.num_negatives=8,100000",  # the second asks for more distinct negatives than the vocabulary has
        "trainer.max_epochs=1",
        "callbacks=none",
        "logger=[]",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode != 0  # the sweep reports that a job failed ...
    rows = read_summary(sweep)  # ... and its summary still has every job
    assert [(row["job"], row["status"], row["swept"]) for row in rows] == [
        ("0", "completed", "loss.num_negatives=8"),
        ("1", "failed", "loss.num_negatives=100000"),
    ]
    assert float(rows[0]["val/ppl"]) > 1
    assert "loss.num_negatives=100000 distinct ids cannot be drawn" in rows[1]["error"]
    assert json.loads((sweep / "0" / "results.json").read_text())["status"] == "completed"


def test_a_killed_optuna_search_continues_its_study_when_run_again(tiny_corpus, tmp_path):
    search = [
        *tiny_overrides(tiny_corpus),
        "hparams_search=ptb_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "trainer.max_epochs=1",
        "callbacks=none",
        "logger=[]",
        f"paths.log_dir={tmp_path / 'logs'}",
        # SIGKILL the whole search at step 20 of trial 1, once
        "+callbacks.kill._target_=tests.helpers.KillOnceInJob",
        "+callbacks.kill.job=1",
        "+callbacks.kill.step=20",
        f"+callbacks.kill.marker={tmp_path / 'killed'}",
    ]
    searches = tmp_path / "logs" / "train" / "multiruns"
    killed = run_train_cli(*search)
    assert killed.returncode == -signal.SIGKILL and (tmp_path / "killed").exists()
    [sweep] = list(searches.iterdir())  # named after the search, not the time: the re-run finds it
    assert sweep.name.startswith("ptb_optuna-") and (sweep / "optuna.db").is_file()
    job0 = (sweep / "0" / "results.json").read_text()
    trial1 = OmegaConf.load(sweep / "1" / ".hydra" / "overrides.yaml")
    assert not (sweep / "1" / "results.json").exists()

    again = run_train_cli(*search)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    assert list(searches.iterdir()) == [sweep]
    assert (sweep / "0" / "results.json").read_text() == job0  # the finished trial was kept, not run again
    assert OmegaConf.load(sweep / "1" / ".hydra" / "overrides.yaml") == trial1  # the killed one ran again as it was
    rows = read_summary(sweep)
    assert [(row["job"], row["status"]) for row in rows] == [("0", "completed"), ("1", "completed"), ("2", "completed")]
    study = optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [(t.number, t.state) for t in study.trials] == [(n, TrialState.COMPLETE) for n in range(3)]  # 3 in all
    assert [t.value for t in study.trials] == [float(row["val/ppl"]) for row in rows]  # trial N is job N
    assert {f"{key}={value}" for key, value in study.trials[1].params.items()} <= set(trial1)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == min(float(row["val/ppl"]) for row in rows)
    # model.optimizer.lr is fixed on this command line (tiny_overrides), so Optuna searches the other two
    assert set(best.best_params) == {"model.net.dropout", "trainer.gradient_clip_val"}
