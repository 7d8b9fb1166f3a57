#!/usr/bin/env python
"""nslm vs a bare PyTorch loop of the same model, side by side in one process.

    python scripts/compare_bare_pytorch.py                 # throughput: median step, 5 alternating rounds
    python scripts/compare_bare_pytorch.py --epochs 1      # also 1 full PTB epoch each: val/test ppl

Both train `experiment=ptb_example` (2x200 LSTM, exact softmax, SGD lr 20, clip 0.25, batch 20, bptt 35)
on the same PTB token ids. Needs PTB in NSLM_DATA_DIR. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date

import torch
from hydra import compose, initialize_config_dir

from nslm.bench.bare_loop import ClassicRNNModel, batchify, evaluate, train_epoch
from nslm.train import train
from nslm.utils.paths import config_dir


def nslm_config(overrides: list[str], output_dir: str):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=ptb_example",
                "logger=[]",
                f"paths.output_dir={output_dir}",
                "print_config=false",
                *overrides,
            ],
        )


def run_nslm(steps: int | None, epochs: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"trainer.max_epochs={epochs}",
            f"seed={seed}",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
        ]
        if steps is not None:
            overrides += [
                f"trainer.limit_train_batches={steps}",
                "trainer.limit_val_batches=0",
                "test=false",
                "callbacks=none",
            ]
        return train(nslm_config(overrides, out))


def run_bare(cache, steps: int | None, seed: int) -> dict:
    torch.manual_seed(seed)
    vocab = len(cache.vocab)
    model = ClassicRNNModel(vocab, 200, 200, 2, 0.2)
    train_data = batchify(cache.tokens("train"), 20)
    step_seconds: list[float] = []
    tokens, seconds = train_epoch(model, train_data, lr=20.0, max_steps=steps, step_seconds=step_seconds)
    result = {
        "train/tokens_per_sec": tokens / seconds,
        "seconds": seconds,
        "train/median_step_seconds": statistics.median(step_seconds),
    }
    if steps is None:
        result["val/ppl"] = evaluate(model, batchify(cache.tokens("valid"), 10))
        result["test/ppl"] = evaluate(model, batchify(cache.tokens("test"), 10))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="training windows per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=0, help="also train this many full epochs each (ppl)")
    parser.add_argument("--seed", type=int, default=1111)
    parser.add_argument("--json", default="outputs/compare_bare_pytorch.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        from hydra.utils import instantiate

        datamodule = instantiate(nslm_config([], out).data)
        cache = datamodule.cache

    # Alternating rounds, so slow spells of this shared machine hit both alike; within a round each
    # side's median step time (tokens per step / median) ignores the occasional stalled step.
    tokens_per_step = 20 * 35
    rounds = []
    for index in range(args.rounds):
        bare = tokens_per_step / run_bare(cache, args.steps, args.seed + index)["train/median_step_seconds"]
        ours = tokens_per_step / run_nslm(args.steps, 1, args.seed + index)["train/median_step_seconds"]
        rounds.append({"bare": bare, "nslm": ours, "ratio": ours / bare})
        print(f"round {index}: bare {bare:,.0f} tok/s  nslm {ours:,.0f} tok/s  ratio {ours / bare:.3f}", flush=True)
    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()} {platform.processor()}",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "rounds": rounds,
        "median_bare_tokens_per_sec": statistics.median(r["bare"] for r in rounds),
        "median_nslm_tokens_per_sec": statistics.median(r["nslm"] for r in rounds),
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
    }
    print("\n| | tokens/s (median) |\n|---|---|")
    print(f"| bare PyTorch loop | {report['median_bare_tokens_per_sec']:,.0f} |")
    print(f"| nslm (Lightning) | {report['median_nslm_tokens_per_sec']:,.0f} |")
    print(f"| ratio nslm/bare | {report['median_ratio']:.3f} |")

    if args.epochs:
        epochs = args.epochs
        started = time.perf_counter()
        bare = run_bare(cache, None, args.seed)
        bare["wall_seconds"] = time.perf_counter() - started
        ours = run_nslm(None, epochs, args.seed)
        report["epoch_runs"] = {
            "bare": bare,
            "nslm": {k: ours[k] for k in ("val/ppl", "test/ppl", "train/tokens_per_sec", "wall_seconds")},
        }
        print(f"\nafter {epochs} epoch(s): | val ppl | test ppl | tokens/s |\n|---|---|---|---|")
        for name, result in report["epoch_runs"].items():
            print(
                f"| {name} | {result['val/ppl']:.1f} | {result['test/ppl']:.1f} | "
                f"{result['train/tokens_per_sec']:,.0f} |"
            )
    with open(args.json, "w") as handle:
        json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
