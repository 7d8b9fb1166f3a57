"""`nslm-bench`: training-step throughput, time split and peak memory of every objective x sampler, beside
exact softmax and a bare PyTorch loop of the same model, at several vocabulary sizes, in one run.

    nslm-bench                                              # the default grid, ~6 min on a 2-core CPU
    nslm-bench --vocab-sizes 1000000 --ks 1024 --objectives sampled_softmax --samplers unigram
    nslm-bench --device cuda                                # on a GPU (bf16 autocast where supported)
    nslm-bench --ddp 2 --vocab-sizes 10000,1000000 --objectives sampled_softmax --samplers unigram --ks 1024
                                                            # 2-rank DDP fits: step time, bytes sent per rank

The model is `experiment=ptb_example` (2x200 LSTM, batch 20, bptt 35) on Zipfian token ids. Every row is
the median of repeated steps after a warm-up step. nslm's real exact-softmax step (the Lightning Trainer
with nslm's module) is compared with the bare loop in alternating rounds, so that a slow spell of a shared
machine hits both sides. Writes `bench.json` and `bench.md` into `--out/<timestamp>/`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import nn

from nslm.bench.bare_loop import ClassicRNNModel, bare_step, batchify, train_epoch
from nslm.bench.config import compose_config
from nslm.bench.ddp import ddp_rows
from nslm.bench.profile import Clock, peak_memory, profile_nslm_step, reset_peak_memory, rss_mb, summarize
from nslm.bench.step import zipf_tokens, zipf_vocabulary
from nslm.bench.tables import markdown_report
from nslm.build import build_loss, build_module
from nslm.callbacks.throughput import TokenThroughput
from nslm.data.windows import StreamLayout, TokenWindowDataset, WindowLoader
from nslm.optim import build_optimizer
from nslm.run_record import draws_k, run_label
from nslm.utils.atomic import atomic_write_json, atomic_write_text

OBJECTIVES = ("sampled_softmax", "nce", "neg")
SAMPLERS = ("uniform", "unigram", "log_uniform", "in_batch", "mixed")  # the default grid
KNOWN_SAMPLERS = (*SAMPLERS, "mixed_unigram", "kernel")  # also accepted by --samplers
BARE = "bare PyTorch loop"  # the reference row
FULL_PLAIN = "full (plain)"  # exact softmax through F.linear + F.cross_entropy (the [rows x V] logits stored)
TOKENS = 60_000  # token ids per vocabulary size: more windows than any configuration steps through


def _csv(kind):
    return lambda text: [kind(item) for item in text.split(",") if item]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nslm-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocab-sizes", type=_csv(int), default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--ks", type=_csv(int), default=[256, 1024, 8192], help="negatives per step")
    parser.add_argument("--objectives", type=_csv(str), default=list(OBJECTIVES))
    parser.add_argument("--samplers", type=_csv(str), default=list(SAMPLERS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (after 1 warm-up step)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="per row; then stop at >= 3 steps")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, nslm Trainer vs bare loop")
    parser.add_argument("--trainer-steps", type=int, default=150, help="steps per round, nslm Trainer vs bare")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--bf16", default="auto", choices=["auto", "on", "off"], help="autocast (CUDA only)")
    parser.add_argument(
        "--ddp",
        type=int,
        default=0,
        metavar="RANKS",
        help="instead of the grid: RANKS-rank DDP fits of each objective x sampler x k (nslm.bench.ddp)",
    )
    parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=True,
                        help="adaptive softmax rows (loss=adaptive) beside exact softmax")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args(argv)
    if args.ddp == 1 or args.ddp < 0:
        parser.error("--ddp needs at least 2 ranks")
    for name in ("steps", "rounds", "trainer_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    unknown = sorted(set(args.objectives) - set(OBJECTIVES)) + sorted(set(args.samplers) - set(KNOWN_SAMPLERS))
    if unknown:
        parser.error(f"unknown {unknown}; objectives: {', '.join(OBJECTIVES)}; samplers: {', '.join(KNOWN_SAMPLERS)}")
    if min(args.vocab_sizes, default=0) < 3 or min(args.ks, default=0) < 1:
        parser.error("--vocab-sizes must be >= 3 and --ks >= 1")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if cuda else "cpu")
        self.bf16 = cuda and args.bf16 != "off" and torch.cuda.is_bf16_supported()
        self.base = compose_config(["loss=full"])

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---- one row each -------------------------------------------------------------------------------
    def nslm_row(self, net: nn.Module, vocab, dataset, overrides: list[str]) -> dict:
        cfg = compose_config(overrides)
        loss_fn = build_loss(cfg, vocab.counts).to(self.device)
        net.embedding.sparse = bool(cfg.model.net.sparse_embedding)
        named = [*net.named_parameters(), *loss_fn.named_parameters()]
        optimizer = build_optimizer(
            instantiate(cfg.model.optimizer), named, net.sparse_tables(loss_fn.sparse_gradients)
        )
        return profile_nslm_step(
            net, loss_fn, optimizer, dataset, cfg.trainer.gradient_clip_val, self.device, self.autocast,
            steps=self.args.steps, max_seconds=self.args.max_seconds,
        )  # fmt: skip

    def bare_row(self, vocab_size: int, tokens: np.ndarray, steps: int) -> dict:
        """The example's loop at this V; timed like the nslm rows (median step, peak memory)."""
        torch.manual_seed(0)
        data = batchify(tokens, self.base.data.batch_size).to(self.device)
        model = ClassicRNNModel(vocab_size, 200, 200, 2, 0.2).to(self.device)
        clock, bptt, criterion, hidden = Clock(self.device), self.base.data.bptt, nn.NLLLoss(), None
        parts: dict[str, list[float]] = {"total": []}
        reset_peak_memory(self.device)
        baseline = rss_mb()
        started = time.perf_counter()
        for index in range(1 + steps):
            i = (index * bptt) % (data.size(0) - bptt - 1)
            t0 = clock.now()
            with self.autocast():
                _, hidden = bare_step(model, data[i : i + bptt], data[i + 1 : i + 1 + bptt].reshape(-1), hidden,
                                      lr=20.0, clip=0.25, criterion=criterion)  # fmt: skip
            if index:
                parts["total"].append(clock.now() - t0)
                if index >= 3 and time.perf_counter() - started > self.args.max_seconds:
                    break
        result = summarize(parts, bptt * self.base.data.batch_size)
        result.update(peak_memory(self.device), step_memory_mb=peak_memory(self.device)["peak_rss_mb"] - baseline)
        del model, data
        return result

    def grid(self) -> list[tuple[str, str | None, int | None]]:
        # exact softmax in both forms (chunked: nslm's default; plain: F.linear + F.cross_entropy) and
        # adaptive softmax, the exact-normalised peer, before the sampled objectives
        rows: list[tuple[str, str | None, int | None]] = [("full", None, None), (FULL_PLAIN, None, None)]
        rows += [("adaptive", None, None)] if self.args.adaptive else []
        for objective in self.args.objectives:
            for sampler in self.args.samplers:
                ks = self.args.ks if draws_k(sampler) else [None]  # in-batch: the batch's targets
                rows += [(objective, sampler, k) for k in ks]
        return rows

    def vocab_rows(self, vocab_size: int) -> list[dict]:
        vocab = zipf_vocabulary(vocab_size)
        tokens = zipf_tokens(vocab_size, TOKENS)
        dataset = TokenWindowDataset(tokens, StreamLayout(len(tokens), self.base.data.batch_size), self.base.data.bptt)
        rows = [{"vocab_size": vocab_size, "objective": BARE, "sampler": None, "k": None,
                 **self.bare_row(vocab_size, tokens, self.args.steps)}]  # fmt: skip
        torch.manual_seed(0)
        net = build_module(self.base, vocab).net.to(self.device)
        for objective, sampler, k in self.grid():
            overrides = ["loss=full", "loss.chunked=false"] if objective == FULL_PLAIN else [f"loss={objective}"]
            if sampler is not None:
                overrides += [f"sampler={sampler}", "model.net.sparse_embedding=true"]
                overrides += [f"loss.num_negatives={k}"] if k is not None else []
            row = {"vocab_size": vocab_size, "objective": objective, "sampler": sampler, "k": k}
            row.update(self.nslm_row(net, vocab, dataset, overrides))
            rows.append(row)
            print(_progress_line(row), file=sys.stderr, flush=True)
        del net
        gc.collect()
        return rows

    # ---- headline: nslm's real step (Lightning Trainer) vs the bare loop, alternating rounds ----------
    def trainer_step_seconds(self, vocab, tokens: np.ndarray) -> float:
        torch.manual_seed(0)
        module = build_module(self.base, vocab)
        dataset = TokenWindowDataset(tokens, StreamLayout(len(tokens), self.base.data.batch_size), self.base.data.bptt)
        throughput = TokenThroughput()
        trainer = instantiate(
            self.base.trainer, callbacks=[throughput], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, max_epochs=1, limit_val_batches=0,
            limit_train_batches=self.args.trainer_steps, accelerator=self.device.type, devices=1,
            precision="bf16-mixed" if self.bf16 else "32-true",
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=WindowLoader(dataset, batch_size=None))
        return throughput.median_step_seconds

    def bare_step_seconds(self, vocab_size: int, tokens: np.ndarray) -> float:
        torch.manual_seed(0)
        model = ClassicRNNModel(vocab_size, 200, 200, 2, 0.2).to(self.device)
        seconds: list[float] = []
        data = batchify(tokens, self.base.data.batch_size).to(self.device)
        with self.autocast():
            train_epoch(model, data, lr=20.0, max_steps=self.args.trainer_steps, step_seconds=seconds)
        return statistics.median(seconds[1:])  # the first step pays one-off allocations

    def trainer_vs_bare(self, vocab_size: int) -> dict:
        vocab, tokens = zipf_vocabulary(vocab_size), zipf_tokens(vocab_size, TOKENS)
        rounds = []
        for _ in range(self.args.rounds):
            bare = self.bare_step_seconds(vocab_size, tokens)
            ours = self.trainer_step_seconds(vocab, tokens)
            rounds.append({"bare_step_s": bare, "nslm_step_s": ours, "speed_ratio": bare / ours})
        return {"vocab_size": vocab_size, "rounds": rounds,
                "median_speed_ratio": statistics.median(r["speed_ratio"] for r in rounds)}  # fmt: skip


def _progress_line(row: dict) -> str:
    name = run_label(row["objective"], row["sampler"])
    k = f" k={row['k']}" if row["k"] else ""
    return f"V={row['vocab_size']:,} {name}{k}: {row['tokens_per_sec']:,.0f} tokens/s"


def machine() -> dict:
    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}  # fmt: skip
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def add_speedups(rows: list[dict]) -> None:
    """tokens/s of each row over exact softmax (nslm) and over the bare loop, at the same V."""
    by_vocab: dict[int, dict[str, float]] = {}
    for row in rows:
        if row["objective"] in ("full", BARE):
            by_vocab.setdefault(row["vocab_size"], {})[row["objective"]] = row["tokens_per_sec"]
    for row in rows:
        reference = by_vocab.get(row["vocab_size"], {})
        full, bare = reference.get("full"), reference.get(BARE)
        row["vs_full"] = row["tokens_per_sec"] / full if full else None
        row["vs_bare"] = row["tokens_per_sec"] / bare if bare else None


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark that `argv` asks for; write and return its report."""
    args = parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    pl.seed_everything(0, verbose=False)
    bench = Bench(args)
    started = time.perf_counter()
    if args.ddp:
        return _write(args, argv, ddp_report(args, bench, started, argv))
    report = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join(["nslm-bench", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        "device": bench.device.type,
        "bf16_autocast": bench.bf16,
        "model": "experiment=ptb_example: 2x200 LSTM, batch 20, bptt 35, SGD, clip 0.25",
        "trainer_vs_bare": bench.trainer_vs_bare(min(args.vocab_sizes)),
        "rows": [],
    }
    for vocab_size in args.vocab_sizes:
        report["rows"] += bench.vocab_rows(vocab_size)
    add_speedups(report["rows"])
    report["seconds"] = time.perf_counter() - started
    return _write(args, argv, report)


def ddp_report(args: argparse.Namespace, bench: Bench, started: float, argv: list[str] | None) -> dict:
    configs = [row for row in bench.grid() if row[0] not in ("full", FULL_PLAIN, "adaptive")]
    report = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join(["nslm-bench", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        "device": bench.device.type,
        "bf16_autocast": False,
        "model": "experiment=ptb_example: 2x200 LSTM, batch 20 per rank, bptt 35, SGD, clip 0.25",
        "ddp_rows": ddp_rows(args.ddp, args.vocab_sizes, configs, bench.device.type, args.steps),
    }
    report["seconds"] = time.perf_counter() - started
    return report


def _write(args: argparse.Namespace, argv: list[str] | None, report: dict) -> dict:
    out = args.out / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    atomic_write_json(out / "bench.json", report)
    markdown = markdown_report(report)
    atomic_write_text(out / "bench.md", markdown)
    print(markdown)
    print(f"written: {out / 'bench.json'}, {out / 'bench.md'}", file=sys.stderr)
    report["out"] = str(out)
    return report


def main() -> None:
    run()


if __name__ == "__main__":
    main()
