"""Encoding streams: peak memory stays flat as the corpus grows, far below the token file's size."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

SCRIPT = REPO / "scripts" / "bench_encode_memory.py"


def measure(tokens: int, tmp_path, one_line: bool = False) -> dict:
    name = f"{tokens}{'-one-line' if one_line else ''}"
    out = tmp_path / f"mem-{name}.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tokens",
            str(tokens),
            "--workdir",
            str(tmp_path / name),
            "--json",
            str(out),
            *(["--one-line"] if one_line else []),
        ],
        check=True,
        timeout=900,
        capture_output=True,
    )
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def four_million_in_lines(tmp_path_factory) -> dict:
    return measure(4_000_000, tmp_path_factory.mktemp("lines"))


def test_peak_memory_does_not_grow_with_corpus_size(tmp_path, four_million_in_lines):
    small, large = measure(500_000, tmp_path), four_million_in_lines
    assert large["tokens"] == 4_000_000
    growth = large["encode_peak_rss_mb"] - small["encode_peak_rss_mb"]
    assert growth < 0.25 * (large["token_file_mb"] - small["token_file_mb"]), (small, large)


def test_one_long_line_costs_no_more_memory_than_the_same_text_in_lines(tmp_path, four_million_in_lines):
    """The same 3.8M words on one 16 MB line: reading it whole cost ~320 MB more (20x the line); streamed in
    bounded pieces it costs a few MB more, whatever the line's length."""
    one_line = measure(4_000_000, tmp_path, one_line=True)
    assert one_line["text_mb"] > 15 and one_line["tokens"] > 3_800_000
    extra = one_line["encode_growth_mb"] - four_million_in_lines["encode_growth_mb"]
    assert extra < 2 * one_line["text_mb"], (one_line, four_million_in_lines)


@pytest.mark.slow
def test_fifty_million_tokens_encode_far_below_file_size(tmp_path):
    result = measure(50_000_000, tmp_path)
    assert result["token_file_mb"] >= 95  # 50M uint16 ids
    assert result["encode_growth_mb"] < result["token_file_mb"] / 10, result
