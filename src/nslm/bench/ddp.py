"""`nslm-bench --ddp N`: a real N-rank DDP fit (nslm's Trainer, module and SparseAwareDDPStrategy) per
vocabulary size and configuration, timed per step, with the bytes each rank sends.

Two rows per (V, objective, sampler, k):

    sparse   the objective as nslm runs it: output (and input, sparse_embedding) table gradients are
             averaged as (row ids, row values) by an all_gather; traffic O(ranks x rows touched x D)
    dense    the same objective with loss.sparse_gradients=false, sparse_embedding=false: both V x D
             tables go through DDP's dense all-reduce, the O(V x D) traffic sampling is meant to remove

"bytes sent per step" counts what a rank puts on the wire under ring algorithms: (N-1) x its padded rows
for the all_gather (measured each step), 2 (N-1)/N x the tensor for an all-reduce (the dense row's tables,
computed; DDP's own all-reduce of the other dense parameters is the same in both rows and not counted).
Ranks run on gloo (CPU) or NCCL (`--device cuda` with N GPUs).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
from hydra.utils import instantiate

from nslm.bench.config import compose_config
from nslm.bench.step import zipf_tokens, zipf_vocabulary
from nslm.build import build_module
from nslm.data.windows import StreamLayout, TokenWindowDataset, WindowLoader

TOKENS = 200_000


class _StepClock(pl.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.sent: list[int] = []
        self._mark: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._mark)
        self.sent.append(getattr(trainer.strategy, "last_sync_bytes", 0))


def _worker(rank: int, world: int, port: int, job: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")  # fmt: skip
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world) if job["device"] == "cpu" else 1)
    trainer_group = "trainer=ddp" if job["device"] == "cuda" else "trainer=ddp_cpu"
    cfg = compose_config([*job["overrides"], trainer_group, f"trainer.devices={world}"])
    vocab, tokens = zipf_vocabulary(job["vocab_size"]), zipf_tokens(job["vocab_size"], TOKENS)
    pl.seed_everything(0, verbose=False)
    module = build_module(cfg, vocab)
    layout = StreamLayout(len(tokens), cfg.data.batch_size, world_size=world, rank=rank)
    dataset = TokenWindowDataset(tokens, layout, cfg.data.bptt)
    clock = _StepClock()
    trainer = instantiate(
        cfg.trainer, callbacks=[clock], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, max_steps=job["warmup"] + job["steps"], limit_val_batches=0,
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=WindowLoader(dataset, batch_size=None))
    if rank == 0:
        tables = module.sparse_parameters()
        dense_tables = [module.net.embedding.weight, module.net.output_weight]
        table_bytes = sum(p.numel() * p.element_size() for p in dense_tables)
        seconds, sent = clock.seconds[job["warmup"] :], clock.sent[job["warmup"] :]
        result = {
            "median_step_s": statistics.median(seconds),
            "steps": len(seconds),
            "tokens_per_sec": cfg.data.batch_size * cfg.data.bptt * world / statistics.median(seconds),
            "sparse_tables": len(tables),
            # what this rank sent for the tables: measured (sparse) or the dense all-reduce it replaces
            "bytes_sent_per_step": statistics.median(sent) if tables else 2 * (world - 1) * table_bytes // world,
            "dense_allreduce_bytes_per_step": 2 * (world - 1) * table_bytes // world,
        }
        Path(out).write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ddp_rows(ranks: int, vocab_sizes: list[int], configs: list[tuple[str, str | None, int | None]], device: str,
             steps: int, warmup: int = 3) -> list[dict]:  # fmt: skip
    """One sparse and one dense row per (V, objective, sampler, k), each a fresh N-rank fit."""
    rows = []
    for vocab_size in vocab_sizes:
        for objective, sampler, k in configs:
            base = [f"loss={objective}"] + ([f"sampler={sampler}"] if sampler else [])
            base += [f"loss.num_negatives={k}"] if k else []
            for path, extra in (
                ("sparse", ["model.net.sparse_embedding=true"]),
                ("dense", ["loss.sparse_gradients=false", "model.net.sparse_embedding=false"]),
            ):
                job = {"overrides": [*base, *extra], "vocab_size": vocab_size, "device": device,
                       "steps": steps if path == "sparse" or vocab_size < 500_000 else max(3, steps // 4),
                       "warmup": warmup}  # fmt: skip
                with tempfile.TemporaryDirectory() as tmp:
                    out = str(Path(tmp) / "row.json")
                    mp.spawn(_worker, args=(ranks, _free_port(), job, out), nprocs=ranks, join=True)
                    result = json.loads(Path(out).read_text())
                row = {"ranks": ranks, "vocab_size": vocab_size, "objective": objective, "sampler": sampler, "k": k,
                       "sync": path, **result}  # fmt: skip
                rows.append(row)
                print(
                    f"DDP x{ranks} V={vocab_size:,} {objective}+{sampler} k={k} {path}: "
                    f"{row['median_step_s'] * 1000:.1f} ms/step, {row['bytes_sent_per_step'] / 1e6:.2f} MB sent/step",
                    flush=True,
                )
    return rows
