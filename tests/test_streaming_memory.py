"""Encoding streams: peak memory stays flat as the corpus grows, far below the token file's size."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO

SCRIPT = REPO / "scripts" / "bench_encode_memory.py"


def measure(tokens: int, tmp_path) -> dict:
    out = tmp_path / f"mem-{tokens}.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tokens",
            str(tokens),
            "--workdir",
            str(tmp_path / str(tokens)),
            "--json",
            str(out),
        ],
        check=True,
        timeout=900,
        capture_output=True,
    )
    return json.loads(out.read_text())


def test_peak_memory_does_not_grow_with_corpus_size(tmp_path):
    small, large = measure(500_000, tmp_path), measure(4_000_000, tmp_path)
    assert large["tokens"] == 4_000_000
    growth = large["encode_peak_rss_mb"] - small["encode_peak_rss_mb"]
    assert growth < 0.25 * (large["token_file_mb"] - small["token_file_mb"]), (small, large)


@pytest.mark.slow
def test_fifty_million_tokens_encode_far_below_file_size(tmp_path):
    result = measure(50_000_000, tmp_path)
    assert result["token_file_mb"] >= 95  # 50M uint16 ids
    assert result["encode_growth_mb"] < result["token_file_mb"] / 10, result
