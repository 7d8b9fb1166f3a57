"""The stream layout: windows tile each stream, ranks own disjoint slices that cover the split."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nslm.batch import IGNORE_INDEX
from nslm.data.windows import StreamLayout, TokenWindowDataset


def target_positions(dataset: TokenWindowDataset) -> list[list[int]]:
    """For each stream (column), the split positions its targets come from, window after window."""
    columns = [[] for _ in range(dataset.layout.batch_size)]
    for window in dataset:
        for b in range(window.targets.shape[1]):
            for t in range(window.targets.shape[0]):
                if window.targets[t, b] != IGNORE_INDEX:
                    columns[b].append(int(window.targets[t, b]))
    return columns


@pytest.mark.parametrize(
    "num_tokens,batch,world,bptt",
    [
        (24, 4, 1, 3),
        (101, 3, 1, 7),
        (101, 3, 2, 7),
        (1000, 5, 4, 35),
        (10, 4, 3, 2),
        (2, 1, 1, 5),
    ],
)
def test_ranks_cover_every_target_exactly_once_in_order(num_tokens, batch, world, bptt):
    tokens = np.arange(num_tokens, dtype=np.int64)  # token value == its position
    seen = []
    window_counts = set()
    for rank in range(world):
        dataset = TokenWindowDataset(tokens, StreamLayout(num_tokens, batch, world, rank), bptt)
        window_counts.add(len(dataset))
        assert len(list(dataset)) == len(dataset)
        for column in target_positions(dataset):
            assert column == sorted(column) and all(b - a == 1 for a, b in itertools.pairwise(column))
            seen += column
    assert sorted(seen) == list(range(1, num_tokens))  # disjoint, and nothing skipped
    assert len(window_counts) == 1  # every rank runs the same number of steps (DDP collectives)


def test_windows_tile_each_stream_and_inputs_precede_targets():
    tokens = np.arange(24, dtype=np.int64)
    dataset = TokenWindowDataset(tokens, StreamLayout(24, 4), bptt=3)
    windows = list(dataset)
    assert len(windows) == 2
    inputs = torch.cat([w.inputs for w in windows])  # [time, stream]
    targets = torch.cat([w.targets for w in windows])
    assert inputs[:, 0].tolist() == [0, 1, 2, 3, 4, 5]  # the diagram in nslm.data.windows
    assert targets[:, 1].tolist() == [7, 8, 9, 10, 11, 12]
    assert targets[:, 3].tolist() == [19, 20, 21, 22, 23, IGNORE_INDEX]
    valid = targets != IGNORE_INDEX
    assert torch.equal(targets[valid], inputs[valid] + 1)
    assert sum(w.num_tokens for w in windows) == 23


def test_worker_processes_keep_the_window_order():
    tokens = np.arange(500, dtype=np.int64)
    dataset = TokenWindowDataset(tokens, StreamLayout(500, 4), bptt=6)
    single = [w.targets for w in DataLoader(dataset, batch_size=None)]
    multi = [w.targets for w in DataLoader(dataset, batch_size=None, num_workers=2)]
    assert len(single) == len(multi) and all(torch.equal(a, b) for a, b in zip(single, multi, strict=True))


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        StreamLayout(1, 1)
    with pytest.raises(ValueError, match="rank"):
        StreamLayout(10, 2, world_size=2, rank=2)
    with pytest.raises(ValueError, match="bptt"):
        TokenWindowDataset(np.arange(10), StreamLayout(10, 2), bptt=0)
