"""One training step, taken apart: where the time goes (LSTM, output loss, sampling, optimizer) and how much
memory it needs, for nslm's step and for the bare reference loop.

The split is exact bookkeeping, not sampling-profiler guesses: the step runs as

    features = net(inputs)                       LSTM forward
    loss(features.detach().requires_grad_())      output loss forward + backward (sampling timed inside)
    features.backward(leaf.grad)                  LSTM backward
    clip + optimizer.step + zero_grad             optimizer

which computes the same gradients as one `loss.backward()` (the chain rule split at the LSTM output). On a
GPU every boundary synchronises, so the parts add up to the step.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from nslm.data.windows import TokenWindowDataset
from nslm.optim import clip_sparse_aware_

PARTS = ("lstm", "loss", "sampling", "optimizer")


def _proc_status_mb(field: str) -> float | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def rss_mb() -> float:
    return _proc_status_mb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _release_freed_memory() -> None:
    """Hand memory that earlier rows freed back to the OS (glibc keeps it otherwise), so that a row's
    peak counts what it allocates itself rather than reusing what the previous row left behind."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window; False where the OS cannot reset it (peaks then only grow)."""
    _release_freed_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM, the peak resident set
        return True
    except OSError:
        return False


def peak_memory(device: torch.device) -> dict[str, float]:
    peak = _proc_status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    memory = {"peak_rss_mb": peak}
    if device.type == "cuda":
        memory["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return memory


class Clock:
    """Wall time between marks, synchronising the GPU first so that queued kernels are counted."""

    def __init__(self, device: torch.device) -> None:
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()


@contextlib.contextmanager
def timed_sampler(loss: torch.nn.Module, clock: Clock, spent: list[float]) -> Iterator[None]:
    """Add the time of each `loss.sampler.sample` call to `spent[0]` while inside the block."""
    sampler = getattr(loss, "sampler", None)
    if sampler is None:
        yield
        return
    original = sampler.sample

    def sample(*args, **kwargs):
        started = clock.now()
        result = original(*args, **kwargs)
        spent[0] += clock.now() - started
        return result

    sampler.sample = sample
    try:
        yield
    finally:
        del sampler.sample  # back to the class's method


def profile_nslm_step(
    net: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: TokenWindowDataset,
    clip: float,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    steps: int,
    warmup: int = 1,
    max_seconds: float = 30.0,
) -> dict:
    """Median step time and its parts over `steps` steps (at least 3 once `max_seconds` is used up)."""
    clock = Clock(device)
    parameters = [p for p in net.parameters()] + [p for p in loss_fn.parameters()]
    parts: dict[str, list[float]] = {name: [] for name in (*PARTS, "total")}
    hidden = None
    net.train()
    resettable = reset_peak_memory(device)
    baseline = rss_mb()  # after the reset: what is held before this row's first step
    started_all = time.perf_counter()
    for index in range(warmup + steps):
        window = dataset.window(index % len(dataset))
        inputs, targets = window.inputs.to(device), window.targets.to(device)
        sampling = [0.0]
        t0 = clock.now()
        with autocast():
            features, hidden = net(inputs, hidden)
        hidden = tuple(h.detach() for h in hidden)
        t1 = clock.now()
        leaf = features.detach().requires_grad_()
        with timed_sampler(loss_fn, clock, sampling), autocast():
            loss = loss_fn(leaf.reshape(-1, leaf.shape[-1]), targets.reshape(-1), net.output_weight, net.output_bias)
        loss.backward()
        t2 = clock.now()
        features.backward(leaf.grad)
        t3 = clock.now()
        clip_sparse_aware_([p for p in parameters if p.grad is not None], clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t4 = clock.now()
        if index >= warmup:
            parts["lstm"].append((t1 - t0) + (t3 - t2))
            parts["loss"].append((t2 - t1) - sampling[0])
            parts["sampling"].append(sampling[0])
            parts["optimizer"].append(t4 - t3)
            parts["total"].append(t4 - t0)
            if len(parts["total"]) >= 3 and time.perf_counter() - started_all > max_seconds:
                break
    result = summarize(parts, window.num_tokens)
    result.update(peak_memory(device), step_memory_mb=peak_memory(device)["peak_rss_mb"] - baseline)
    result.update(peak_resets=resettable, final_loss=float(loss.detach()))
    return result


def summarize(parts: dict[str, list[float]], tokens_per_step: int) -> dict:
    medians = {name: statistics.median(values) for name, values in parts.items() if values}
    return {
        "steps_timed": len(parts["total"]),
        "median_step_s": medians["total"],
        "tokens_per_sec": tokens_per_step / medians["total"],
        "split_s": {name: medians[name] for name in PARTS if name in medians},
    }
