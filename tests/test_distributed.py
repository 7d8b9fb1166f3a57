"""DDP on CPU (gloo): 2 ranks reproduce 1 process exactly, see disjoint windows, and run inside a Hydra
multirun (no relaunched sweep) and through submitit's local launcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nslm.distributed import gather_from_all_ranks
from nslm.samplers import InBatchSampler
from tests.helpers import run_train_cli, tiny_overrides

TRAIN_WINDOWS = 20  # the split's last (padded) window is left out: there a per-rank mean != global mean


def ddp_overrides(corpus, record_dir: Path, log_dir: Path) -> list[str]:
    return [
        *tiny_overrides(corpus),
        "model.net.dropout=0",  # no per-rank random masks: 2 ranks then compute what 1 process does
        "data.eval_batch_size=4",  # streams over all ranks: the same evaluation layout on 1 or 2 ranks
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={TRAIN_WINDOWS}",
        "callbacks=none",
        "logger=[]",
        "test=false",
        "+callbacks.record._target_=tests.helpers.RecordTrainWindows",
        f"+callbacks.record.out_dir={record_dir}",
        f"paths.log_dir={log_dir}",
    ]


def read_positions(record_dir: Path) -> dict[str, set[int]]:
    return {path.stem: set(json.loads(path.read_text())) for path in record_dir.glob("rank*.json")}


def test_two_ddp_ranks_match_one_process_and_see_disjoint_windows(tiny_corpus, tmp_path):
    single = run_train_cli(
        *ddp_overrides(tiny_corpus, tmp_path / "single", tmp_path / "logs1"),
        "data.batch_size=4",
        f"hydra.run.dir={tmp_path / 'run1'}",
    )
    assert single.returncode == 0, single.stderr[-3000:]

    # two ranks of 2 streams each = the single process's 4 streams; launched from inside a multirun
    sweep = tmp_path / "sweep"
    ddp = run_train_cli(
        "-m",
        *ddp_overrides(tiny_corpus, tmp_path / "ddp", tmp_path / "logs2"),
        "trainer=ddp_cpu",
        "data.batch_size=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0"]  # one job: the sweep did not relaunch
    assert not (tmp_path / "logs2").exists()  # and no rank wrote a run of its own

    one = json.loads((tmp_path / "run1" / "results.json").read_text())
    two = json.loads((sweep / "0" / "results.json").read_text())
    assert two["config"]["trainer"]["devices"] == 2 and two["global_step"] == one["global_step"] == TRAIN_WINDOWS
    assert two["val/ppl"] == pytest.approx(one["val/ppl"], rel=1e-5)

    ranks = read_positions(tmp_path / "ddp")
    assert set(ranks) == {"rank0", "rank1"}
    assert not ranks["rank0"] & ranks["rank1"]  # no target trained twice
    assert ranks["rank0"] | ranks["rank1"] == read_positions(tmp_path / "single")["rank0"]  # and none skipped


def test_ddp_through_submitit_local_with_two_tasks(tiny_corpus, tmp_path):
    """The launcher path SLURM takes (tasks started by submitit), with a sampled objective and sparse
    input embedding: both tables go through nslm's sparse-aware DDP."""
    sweep = tmp_path / "sweep"
    done = run_train_cli(
        "-m",
        *ddp_overrides(tiny_corpus, tmp_path / "ddp", tmp_path / "logs"),
        "loss=nce",
        "sampler=mixed",
        "sampler.cross_device=true",
        "loss.num_negatives=16",
        "model.net.sparse_embedding=true",
        "hydra/launcher=local_ddp",  # submitit starts the 2 ranks as tasks, as SLURM would
        "trainer=ddp_cpu",
        "data.batch_size=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((sweep / "0" / "results.json").read_text())
    assert results["status"] == "completed" and results["global_step"] == TRAIN_WINDOWS
    ranks = read_positions(tmp_path / "ddp")
    assert set(ranks) == {"rank0", "rank1"} and not ranks["rank0"] & ranks["rank1"]
    assert len(list(sweep.glob(".submitit/*/*_0_log.out"))) == 1  # submitit ran the job


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    targets = torch.tensor([1, 2, 3] if rank == 0 else [3, 4])  # different sizes per rank
    sampler = InBatchSampler([5, 4, 3, 2, 1, 1], cross_device=True)
    candidates = sampler.sample(0, targets)
    result = {"gathered": gather_from_all_ranks(targets), "ids": candidates.ids, "tries": candidates.tries}
    torch.save(result, out.format(rank))
    dist.destroy_process_group()


def test_in_batch_candidates_gathered_from_every_rank(tmp_path):
    port = 29500 + (hash(str(tmp_path)) % 1000)
    mp.spawn(_gather_worker, args=(2, port, str(tmp_path / "rank{}.pt")), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(str(tmp_path / f"rank{rank}.pt"))
        assert result["gathered"].tolist() == [1, 2, 3, 3, 4]
        assert result["ids"].tolist() == [1, 2, 3, 4] and result["tries"] == 5
