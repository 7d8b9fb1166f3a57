"""Lay a token split into parallel streams and cut them into consecutive `bptt` windows.

This is the classic `batchify` of PyTorch's word_language_model, made exact and DDP-aware. A split of N
tokens has N-1 prediction targets. They are cut into S = batch_size * world_size contiguous streams of
L = ceil((N-1) / S) targets each; consecutive streams overlap by one token (a stream's last target is the
next stream's first input), so every token but the first is predicted exactly once, and only the last
stream is padded (padded targets are IGNORE_INDEX and never count). Example, N = 24 tokens a..x, S = 4:

    stream:      0   1   2   3            the columns of one window are the batch;
               ┌ a   g   m   s ┐          the hidden state of column b at the end of
    window 0   │ b   h   n   t │ inputs   window j is where column b of window j+1
               └ c   i   o   u ┘          continues, so it is carried (detached)
               ┌ d   j   p   v ┐
    window 1   │ e   k   q   w │ inputs   targets are the same grid shifted down by
               └ f   l   r   · ┘          one token: b..g for stream 0, ..., t..x for 3

With DDP, rank r owns streams [r*batch_size, (r+1)*batch_size): the ranks' slices are disjoint, cover
the split, and all have the same number of windows (so no rank waits on a collective the others skip).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from nslm.batch import IGNORE_INDEX, TokenWindow
from nslm.errors import ConfigError


@dataclass(frozen=True)
class StreamLayout:
    num_tokens: int
    batch_size: int
    world_size: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        if self.num_tokens < 2:
            raise ConfigError(f"a split needs at least 2 tokens to have a target, got {self.num_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be positive, got {self.batch_size}")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} outside world of size {self.world_size}")

    @property
    def num_targets(self) -> int:
        return self.num_tokens - 1

    @property
    def stream_length(self) -> int:
        return math.ceil(self.num_targets / (self.batch_size * self.world_size))

    def stream_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """[start, end) target positions of this rank's streams; target position p predicts token p+1."""
        first = self.rank * self.batch_size
        starts = (first + np.arange(self.batch_size, dtype=np.int64)) * self.stream_length
        ends = np.minimum(starts + self.stream_length, self.num_targets)
        return starts, np.maximum(ends, starts)

    def num_windows(self, bptt: int) -> int:
        return math.ceil(self.stream_length / bptt)


class TokenWindowDataset(IterableDataset):
    """Yields this rank's windows in order; reads only the touched rows of a memory-mapped split."""

    def __init__(self, tokens: np.ndarray, layout: StreamLayout, bptt: int) -> None:
        if bptt < 1:
            raise ConfigError(f"bptt must be positive, got {bptt}")
        self.tokens = tokens
        self.layout = layout
        self.bptt = bptt
        self.starts, self.ends = layout.stream_bounds()
        # Windows to leave out at the next iteration only: a run resumed mid-epoch continues where its
        # checkpoint was taken instead of re-reading the epoch's first windows (see WindowLoader).
        self.skip_next = 0

    def __len__(self) -> int:
        return self.layout.num_windows(self.bptt)

    def window(self, index: int) -> TokenWindow:
        offset = index * self.bptt
        steps = min(self.bptt, self.layout.stream_length - offset)
        positions = self.starts[None, :] + offset + np.arange(steps, dtype=np.int64)[:, None]
        valid = positions < self.ends[None, :]
        positions = np.minimum(positions, self.layout.num_targets - 1)
        inputs = torch.from_numpy(self.tokens[positions].astype(np.int64))
        targets = torch.from_numpy(self.tokens[positions + 1].astype(np.int64))
        mask = torch.from_numpy(valid)
        targets.masked_fill_(~mask, IGNORE_INDEX)
        return TokenWindow(inputs, targets, int(valid.sum()))

    def __iter__(self) -> Iterator[TokenWindow]:
        # Worker w of n takes windows w, w+n, ...; the DataLoader reads workers round-robin, so the
        # order the model sees is unchanged by num_workers. `skip_next` is read now, not lazily: the
        # loader clears it as soon as the iterator (or the workers' copies of the dataset) exist.
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        indices = range(self.skip_next + worker, len(self), num_workers)
        return (self.window(index) for index in indices)


class WindowLoader(DataLoader):
    """A DataLoader of ready-made windows that can resume an epoch part-way (`skip_windows`)."""

    def skip_windows(self, count: int) -> None:
        """Start the next epoch's iteration at window `count` (the windows before it were trained)."""
        self.dataset.skip_next = count

    def __iter__(self):
        iterator = super().__iter__()  # the dataset (or each worker's copy) has read skip_next by now
        self.dataset.skip_next = 0
        return iterator
