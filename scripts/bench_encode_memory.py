#!/usr/bin/env python
"""Peak memory of encoding a generated corpus into the token cache, against the token file's size.

    python scripts/bench_encode_memory.py --tokens 50000000
    python scripts/bench_encode_memory.py --tokens 10000000 --one-line    # one 50 MB line

Writes a Zipf-distributed text of N tokens (10k-word vocabulary, 20 words per line), then encodes it in a
fresh child process and reports that process's peak RSS growth over its baseline after imports. Streaming
keeps the growth near constant (vocabulary + one flush buffer) whatever N is.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def generate(
    path: Path, tokens: int, vocab: int = 10_000, per_line: int = 20, seed: int = 0, one_line: bool = False
) -> None:
    """`one_line`: the same words, but the whole text on a single line (one <eos> at its end)."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(vocab)], dtype=object)
    probs = 1.0 / np.arange(1, vocab + 1)
    probs /= probs.sum()
    lines_left = tokens // (per_line + 1)  # each line also yields one <eos>
    separator = " " if one_line else "\n"
    with open(path, "w") as out:
        while lines_left > 0:
            lines = min(lines_left, 50_000)
            ids = rng.choice(vocab, size=(lines, per_line), p=probs)
            text = words[ids]
            out.write(separator.join(" ".join(row) for row in text) + separator)
            lines_left -= lines
        if one_line:
            out.write("\n")


def child(workdir: Path, result: Path) -> None:
    from nslm.data.token_cache import prepare_token_cache

    baseline = peak_rss_mb()
    started = time.perf_counter()
    text = workdir / "corpus.txt"
    small = workdir / "small.txt"
    cache = prepare_token_cache("generated", {"train": text, "valid": small, "test": small}, workdir / "cache")
    seconds = time.perf_counter() - started
    token_file = cache.directory / "train.bin"
    peak = peak_rss_mb()
    result.write_text(
        json.dumps(
            {
                "tokens": len(cache.tokens("train")),
                "token_file_mb": token_file.stat().st_size / 2**20,
                "text_mb": text.stat().st_size / 2**20,
                "baseline_rss_mb": baseline,
                "encode_peak_rss_mb": peak,
                "encode_growth_mb": peak - baseline,
                "seconds": seconds,
                "tokens_per_sec": len(cache.tokens("train")) / seconds,
            },
            indent=2,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=50_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("outputs/bench_encode_memory"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one-line", action="store_true", help="the whole corpus on one line (no line breaks)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.workdir, args.json)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    per_line = 20
    lines = args.tokens // (per_line + 1)
    extra = args.tokens - lines * (per_line + 1)
    generate(args.workdir / "corpus.txt", lines * (per_line + 1), per_line=per_line, one_line=args.one_line)
    if extra and not args.one_line:  # one last shorter line makes the count exact
        with open(args.workdir / "corpus.txt", "a") as out:
            out.write(" ".join(["w1"] * (extra - 1)) + "\n")
    (args.workdir / "small.txt").write_text("w1 w2 w3\n")
    result = args.json or args.workdir / "result.json"
    subprocess.run(
        [sys.executable, __file__, "--child", "--workdir", str(args.workdir), "--json", str(result)], check=True
    )
    report = json.loads(result.read_text())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
