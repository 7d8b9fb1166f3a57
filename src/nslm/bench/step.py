"""Time training steps of an nslm model+objective in isolation: the same work as a Lightning step
(forward, loss, backward, norm clipping, SGD) without the trainer, so objectives and vocabulary sizes can
be compared side by side and each measured in a fresh process (peak memory is per configuration)."""

from __future__ import annotations

import resource
import statistics
import tempfile
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from nslm.build import build_module
from nslm.data.vocab import Vocabulary
from nslm.data.windows import StreamLayout, TokenWindowDataset
from nslm.optim import build_optimizer, clip_sparse_aware_
from nslm.utils.paths import config_dir


def zipf_vocabulary(size: int) -> Vocabulary:
    """A vocabulary of `size` words with Zipfian counts (ids already frequency-sorted)."""
    counts = (1e9 / np.arange(1, size + 1)).astype(np.int64) + 1
    itos = ["<eos>", "<unk>", *[f"w{i}" for i in range(size - 2)]]
    return Vocabulary(itos, counts.tolist())


def zipf_tokens(vocab_size: int, num_tokens: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(1.1, size=num_tokens) - 1
    return np.where(ranks < vocab_size, ranks, rng.integers(0, vocab_size, size=num_tokens)).astype(np.int64)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(overrides: list[str], vocab: Vocabulary, tokens: np.ndarray, steps: int, warmup: int = 2) -> dict:
    torch.manual_seed(0)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "train", overrides=["experiment=ptb_example", f"paths.output_dir={tempfile.gettempdir()}", *overrides]
        )
    module = build_module(cfg, vocab)
    net, loss_fn = module.net, module.loss
    optimizer = build_optimizer(module.optimizer_factory, list(module.named_parameters()), module.sparse_parameters())
    clip = cfg.trainer.gradient_clip_val
    dataset = TokenWindowDataset(tokens, StreamLayout(len(tokens), cfg.data.batch_size), cfg.data.bptt)
    net.train()
    hidden, durations = None, []
    baseline_rss = peak_rss_mb()
    for index in range(warmup + steps):
        window = dataset.window(index % len(dataset))
        started = time.perf_counter()
        features, hidden = net(window.inputs, hidden)
        hidden = tuple(h.detach() for h in hidden)
        loss = loss_fn(
            features.reshape(-1, features.shape[-1]), window.targets.reshape(-1), net.output_weight, net.output_bias
        )
        loss.backward()
        clip_sparse_aware_([p for p in module.parameters() if p.grad is not None], clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= warmup:
            durations.append(time.perf_counter() - started)
    median = statistics.median(durations)
    tokens_per_step = cfg.data.batch_size * cfg.data.bptt
    return {
        "median_step_s": median,
        "tokens_per_sec": tokens_per_step / median,
        "steps": steps,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline_rss,
        "loss": float(loss.detach()),
        # memory the training step itself needs on top of the model's weights (held in both cases)
        "step_memory_mb": peak_rss_mb() - baseline_rss,
    }
