"""The reference: PyTorch's classic word_language_model training loop, re-implemented bare (no Lightning).

Same algorithm as the example: embedding -> dropout -> LSTM -> dropout -> linear decoder, log_softmax +
NLLLoss, hidden state detached between bptt windows, clip_grad_norm_, manual SGD `p -= lr * grad`,
lr /= 4 when validation does not improve. It reads the same token ids as nslm (cut into columns with the
example's `batchify`, dropping the remainder), so the two can be timed and scored side by side.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ClassicRNNModel(nn.Module):
    def __init__(self, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, inputs, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(inputs)), hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.decoder.out_features)
        return F.log_softmax(decoded, dim=1), hidden


def batchify(tokens: np.ndarray, batch_size: int) -> torch.Tensor:
    data = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    columns = data.numel() // batch_size
    return data[: columns * batch_size].view(batch_size, -1).t().contiguous()


def bare_step(model, inputs, targets, hidden, lr: float, clip: float, criterion) -> tuple[torch.Tensor, tuple]:
    """One step of the example: detach, zero_grad, forward, NLL, backward, clip, manual SGD."""
    if hidden is not None:
        hidden = tuple(h.detach() for h in hidden)
    model.zero_grad()
    output, hidden = model(inputs, hidden)
    loss = criterion(output.float(), targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-lr)
    return loss, hidden


def train_epoch(
    model, data, lr, bptt=35, clip=0.25, max_steps=None, step_seconds: list[float] | None = None
) -> tuple[int, float]:
    """One epoch (or `max_steps` windows). Returns (target tokens trained, seconds); appends each step's
    duration to `step_seconds` when given."""
    model.train()
    criterion = nn.NLLLoss()
    hidden = None
    tokens, started = 0, time.perf_counter()
    mark = started
    for step, i in enumerate(range(0, data.size(0) - 1, bptt)):
        if max_steps is not None and step >= max_steps:
            break
        seq_len = min(bptt, data.size(0) - 1 - i)
        inputs, targets = data[i : i + seq_len], data[i + 1 : i + 1 + seq_len].reshape(-1)
        _, hidden = bare_step(model, inputs, targets, hidden, lr, clip, criterion)
        tokens += targets.numel()
        if step_seconds is not None:
            now = time.perf_counter()
            step_seconds.append(now - mark)
            mark = now
    return tokens, time.perf_counter() - started


@torch.no_grad()
def evaluate(model, data, bptt=35) -> float:
    """Perplexity the way the example computes it (token-weighted over the batchified split)."""
    model.eval()
    criterion = nn.NLLLoss(reduction="sum")
    hidden, total, count = None, 0.0, 0
    for i in range(0, data.size(0) - 1, bptt):
        seq_len = min(bptt, data.size(0) - 1 - i)
        output, hidden = model(data[i : i + seq_len], hidden)
        targets = data[i + 1 : i + 1 + seq_len].reshape(-1)
        total += criterion(output, targets).item()
        count += targets.numel()
    return math.exp(total / count)
