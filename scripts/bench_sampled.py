#!/usr/bin/env python
"""Training throughput and peak memory of exact softmax vs sampled softmax, side by side.

    python scripts/bench_sampled.py                   # V = 10k (PTB) and V = 1M (generated ids), k = 1024

The ptb_example model (2x200 LSTM, batch 20, bptt 35) is stepped with `loss=full` and with
`loss=sampled_softmax sampler=unigram` (sparse embedding gradients); each configuration runs in a
fresh process, in alternating rounds, and reports its median step time, its peak RSS, and its step
memory (peak RSS minus the RSS once the model is built: what the step needs beyond the weights). Needs PTB in
NSLM_DATA_DIR for the V = 10k rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

CONFIGS = {
    "full": ["loss=full"],
    "sampled_softmax+unigram": ["loss=sampled_softmax", "sampler=unigram", "model.net.sparse_embedding=true"],
}


def child(args) -> None:
    import numpy as np

    from nslm.bench.step import time_steps, zipf_tokens, zipf_vocabulary

    if args.vocab == "ptb":
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate

        from nslm.utils.paths import config_dir

        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cache = instantiate(compose("train", overrides=["data=ptb"]).data).cache
        vocab, tokens = cache.vocab, np.asarray(cache.tokens("train"), dtype=np.int64)[:200_000]
    else:
        vocab = zipf_vocabulary(int(args.vocab))
        tokens = zipf_tokens(len(vocab), 200_000)
    overrides = [*CONFIGS[args.config], f"loss.num_negatives={args.k}"] if args.config != "full" else CONFIGS["full"]
    result = time_steps(overrides, vocab, tokens, steps=args.steps)
    result.update(config=args.config, vocab_size=len(vocab), k=args.k if args.config != "full" else None)
    Path(args.json).write_text(json.dumps(result))


def run(config: str, vocab: str, k: int, steps: int, out: Path) -> dict:
    path = out / f"{config}-{vocab}.json"
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--config",
            config,
            "--vocab",
            vocab,
            "--k",
            str(k),
            "--steps",
            str(steps),
            "--json",
            str(path),
        ],
        check=True,
    )
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-10k", type=int, default=40)
    parser.add_argument("--steps-1m", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_sampled"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--vocab", default="ptb", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--json", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "date": date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "k": args.k,
        "rows": [],
    }
    print("| V | objective | tokens/s (median) | speed-up | peak RSS MB | ratio | step memory MB | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for vocab, steps in (("ptb", args.steps_10k), ("1000000", args.steps_1m)):
        runs = {name: [] for name in CONFIGS}
        for _ in range(args.rounds):
            for name in CONFIGS:
                runs[name].append(run(name, vocab, args.k, steps, args.out))
        full_tps = statistics.median(r["tokens_per_sec"] for r in runs["full"])
        full_rss = max(r["peak_rss_mb"] for r in runs["full"])
        full_step = max(r["step_memory_mb"] for r in runs["full"])
        for name, results in runs.items():
            tps = statistics.median(r["tokens_per_sec"] for r in results)
            rss = max(r["peak_rss_mb"] for r in results)
            step = max(r["step_memory_mb"] for r in results)
            row = {
                "vocab_size": results[0]["vocab_size"],
                "objective": name,
                "tokens_per_sec": tps,
                "speedup_vs_full": tps / full_tps,
                "peak_rss_mb": rss,
                "peak_rss_vs_full": rss / full_rss,
                "step_memory_mb": step,
                "step_memory_vs_full": step / full_step,
                "rounds": results,
            }
            report["rows"].append(row)
            print(
                f"| {row['vocab_size']:,} | {name} | {tps:,.0f} | {tps / full_tps:.2f}x | {rss:,.0f} | "
                f"{rss / full_rss:.3f} | {step:,.0f} | {step / full_step:.3f} |",
                flush=True,
            )
    (args.out / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
