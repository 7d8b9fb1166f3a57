"""What a user sees: the config tree at start, Lightning's rich bar with tokens/s and val ppl, a progress bar
while a corpus downloads or is encoded, and one summary line at the end."""

from __future__ import annotations

import hashlib

from nslm.data.download import download
from nslm.data.token_cache import prepare_token_cache
from tests.helpers import run_train_cli, tiny_overrides


def test_download_and_encoding_show_a_progress_bar(tiny_corpus, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("NSLM_PROGRESS", "1")  # stderr is not a terminal under pytest
    source = tmp_path / "remote.txt"
    source.write_bytes(b"some words\n" * 50_000)
    download([source.as_uri()], tmp_path / "got.txt", hashlib.sha256(source.read_bytes()).hexdigest())
    prepare_token_cache("tiny", tiny_corpus, tmp_path / "cache")
    err = capfd.readouterr().err
    assert "downloading remote.txt" in err and "━━" in err  # a file:// URL has no size: an open-ended bar
    assert all(f"encoding {split}.txt" in err for split in ("train", "valid", "test"))


def test_no_progress_bars_in_logs_by_default(tiny_corpus, tmp_path, capfd):
    prepare_token_cache("tiny", tiny_corpus, tmp_path / "cache")
    assert "encoding" not in capfd.readouterr().err  # not a terminal: batch logs stay clean


def test_a_run_prints_its_config_tree_a_rich_bar_with_throughput_and_val_ppl_and_a_summary(tiny_corpus, tmp_path):
    done = run_train_cli(
        *[o for o in tiny_overrides(tiny_corpus) if o != "trainer.enable_progress_bar=false"],
        "trainer.max_epochs=1", "print_config=true", f"hydra.run.dir={tmp_path}",
        env_extra={"COLUMNS": "250"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert "├── data" in out and "├── model" in out and "├── loss" in out  # the composed config as a tree
    bar_lines = [line for line in out.splitlines() if "train/tokens_per_sec" in line]
    assert bar_lines and any("val/ppl" in line for line in bar_lines)  # rich bar's metrics
    summary = [line for line in out.splitlines() if "done: val ppl" in line]
    assert len(summary) == 1
    assert "test ppl" in summary[0] and "tokens/s" in summary[0] and f"outputs in {tmp_path}" in summary[0]
