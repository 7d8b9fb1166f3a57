"""The quadratic-kernel sampler's state (step count, subspace, embedding snapshot, A) travels in checkpoints:
a sampler restored from a saved state_dict (loaded with weights_only=True) continues exactly as the one it
was saved from, refreshes at the same steps, and a resumed training run ends where an uninterrupted one does.

Expected values come from the sampler saved (bit-identical continuation) and, for the refresh phase, from a
brute-force q in numpy (`test_kernel_sampler.brute_force_q`) written from the definition.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nslm.build import build_module
from nslm.data.vocab import Vocabulary
from nslm.samplers import QuadraticKernelSampler

from .helpers import compose_train, tiny_overrides, write_corpus
from .test_distributed_sparse import _free_port, _join_group
from .test_kernel_sampler import V, brute_force_q, model, top_eigenvectors

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
OPTIONS = {"alpha": 5.0, "rank": 3, "leaf_size": 4, "refresh_every": 3, "uniform_mix": 0.05}


def saved_and_loaded(sampler: torch.nn.Module, path) -> dict:
    torch.save(sampler.state_dict(), path)
    return torch.load(path, weights_only=True)  # tensors, ints, None only


def all_log_probs(sampler: QuadraticKernelSampler) -> torch.Tensor:
    return sampler.log_prob(torch.arange(V))


def test_a_restored_sampler_continues_exactly_and_refreshes_at_the_same_steps(tmp_path):
    batches = [model(seed) for seed in range(10)]  # a new embedding each step, as training moves it
    original = QuadraticKernelSampler(list(range(V)), **OPTIONS)
    for features, weight in batches[:4]:  # refreshes at steps 0 and 3: snapshot of batch 3's embedding
        original.observe(features, weight)
    restored = QuadraticKernelSampler(list(range(V)), **OPTIONS)
    restored.load_state_dict(saved_and_loaded(original, tmp_path / "sampler.pt"))  # strict
    assert restored.steps == 4
    assert torch.equal(all_log_probs(restored), all_log_probs(original))  # A restored too

    for step, (features, weight) in enumerate(batches[4:], start=4):  # past the refreshes at steps 6 and 9
        original.observe(features, weight)
        restored.observe(features, weight)
        assert torch.equal(all_log_probs(restored), all_log_probs(original)), step
        torch.manual_seed(step)
        drawn = original.draw(64, torch.device("cpu"))
        torch.manual_seed(step)
        assert torch.equal(restored.draw(64, torch.device("cpu")), drawn), step
        if step == 5:  # no refresh since step 3: batch 5's features against batch 3's subspace and embedding
            snapshot_features, snapshot_weight = batches[3]
            basis = top_eigenvectors(snapshot_features, 3)
            expected = brute_force_q(features, snapshot_weight, 5.0, 0.05, basis)
            assert np.allclose(all_log_probs(restored).double().exp().numpy(), expected, rtol=1e-5)


@CUDA
def test_a_state_loaded_on_the_cpu_continues_exactly_on_the_gpu(tmp_path):
    """Lightning loads checkpoints on the CPU: the tree is rebuilt on the embedding's device, from the same z,
    at the next step, and equals the one the uninterrupted sampler built there."""
    batches = [tuple(t.cuda() for t in model(seed)) for seed in range(7)]
    original = QuadraticKernelSampler(list(range(V)), **OPTIONS)
    for batch in batches[:4]:
        original.observe(*batch)
    torch.save(original.state_dict(), tmp_path / "sampler.pt")
    restored = QuadraticKernelSampler(list(range(V)), **OPTIONS)
    restored.load_state_dict(torch.load(tmp_path / "sampler.pt", map_location="cpu", weights_only=True))
    for step, batch in enumerate(batches[4:], start=4):  # a refresh at step 6
        original.observe(*batch)
        restored.observe(*batch)
        ids = torch.arange(V, device="cuda")
        assert torch.equal(restored.log_prob(ids), original.log_prob(ids)), step
        torch.manual_seed(step)
        drawn = original.draw(64, torch.device("cuda"))
        torch.manual_seed(step)
        assert torch.equal(restored.draw(64, torch.device("cuda")), drawn), step


def test_the_state_of_a_sampler_that_never_observed_restores_the_uniform_start(tmp_path):
    fresh = QuadraticKernelSampler(list(range(V)), **OPTIONS)
    state = saved_and_loaded(fresh, tmp_path / "fresh.pt")
    assert state["_extra_state"]["snapshot"] is None
    used = QuadraticKernelSampler(list(range(V)), **OPTIONS)
    for seed in range(2):
        used.observe(*model(seed))
    used.load_state_dict(state)  # its own state is replaced: back to the start
    assert used.steps == 0 and torch.allclose(all_log_probs(used), torch.full((V,), -np.log(V), dtype=torch.float32))
    torch.manual_seed(0)
    drawn = fresh.draw(32, torch.device("cpu"))
    torch.manual_seed(0)
    assert torch.equal(used.draw(32, torch.device("cpu")), drawn)
    features, weight = model(7)
    fresh.observe(features, weight)
    used.observe(features, weight)
    assert torch.equal(all_log_probs(used), all_log_probs(fresh))


def test_the_lm_modules_checkpoint_holds_the_sampler_state_and_old_checkpoints_still_load(tmp_path, caplog):
    cfg = compose_train(["loss=sampled_softmax", "sampler=kernel", "sampler.rank=4"], tmp_path / "run")
    vocab = Vocabulary(["<eos>", "<unk>", *(f"w{i}" for i in range(V - 2))], list(range(V, 0, -1)))
    module = build_module(cfg, vocab)
    sampler = module.loss.sampler
    weight = module.net.output_weight
    sampler.observe(torch.randn(12, weight.shape[1]), weight.detach())
    path = tmp_path / "module.pt"
    torch.save(module.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert state["loss.sampler._extra_state"]["steps"] == 1

    twin = build_module(cfg, vocab)
    twin.load_state_dict(state)  # strict: every key matches
    assert twin.loss.sampler.steps == 1
    assert torch.equal(twin.loss.sampler.log_prob(torch.arange(V)), sampler.log_prob(torch.arange(V)))

    del state["loss.sampler._extra_state"]  # as written before the sampler saved its state
    with caplog.at_level(logging.WARNING, logger="nslm.samplers.kernel"):
        twin.load_state_dict(state)  # strict, and still loads: the proposal starts afresh
    assert twin.loss.sampler.steps == 0 and twin.loss.sampler.tree is None
    assert "no kernel sampler state" in caplog.text


def ddp_batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s features at `step` and the embedding, the same on every rank (DDP keeps it in sync)."""
    return model(10 * rank + step)[0], model(100 + step)[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    _join_group(rank, world, port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    sampler = QuadraticKernelSampler(list(range(V)), **{**OPTIONS, "refresh_every": 2})
    for step in range(3):  # refreshes at steps 0 and 2, each with an all-reduce
        sampler.observe(*ddp_batch(rank, step))
    state = sampler.get_extra_state()
    sampler.observe(*ddp_batch(rank, 3))  # no refresh: this rank's A against the shared snapshot
    torch.save({"state": state, "log_q": all_log_probs(sampler)}, out.format(rank))
    dist.destroy_process_group()


def test_ddp_ranks_share_the_subspace_and_snapshot_so_rank_0s_state_restores_every_rank(tmp_path):
    out = str(tmp_path / "rank{}.pt")
    mp.spawn(_ddp_worker, args=(2, _free_port(tmp_path), out), nprocs=2, join=True)
    results = [torch.load(out.format(rank), weights_only=True) for rank in range(2)]
    states = [result["state"] for result in results]
    assert torch.equal(states[0]["projection"], states[1]["projection"])
    assert torch.equal(states[0]["snapshot"], states[1]["snapshot"])
    assert not torch.equal(states[0]["matrix"], states[1]["matrix"])  # A stays each rank's own batch
    # P spans the top-3 eigenvectors of the ranks' mean second moment at the last refresh (step 2)
    both = torch.cat([ddp_batch(rank, 2)[0] for rank in range(2)])  # equal rows per rank: mean of means
    basis = top_eigenvectors(both, 3)
    projection = states[0]["projection"].numpy()
    assert np.allclose(projection.T @ projection, basis @ basis.T, atol=1e-8)
    # rank 0's state (what a checkpoint holds) continues exactly as rank 1 did
    restored = QuadraticKernelSampler(list(range(V)), **{**OPTIONS, "refresh_every": 2})
    restored.set_extra_state(states[0])
    restored.observe(*ddp_batch(1, 3))
    assert torch.equal(all_log_probs(restored), results[1]["log_q"])


def test_training_resumed_from_a_checkpoint_ends_where_an_uninterrupted_run_ends(tmp_path):
    """107 steps per epoch and a refresh every 7: the resume falls between two refreshes. Before the sampler
    saved its state, the resumed run refreshed at once, from another snapshot (val ppl off by 1%)."""
    from nslm.train import train

    corpus = write_corpus(tmp_path / "corpus")
    overrides = [
        *tiny_overrides(corpus),
        "loss=sampled_softmax",
        "loss.num_negatives=16",
        "sampler=kernel",
        "sampler.rank=4",  # below D = 16: the projection is part of the state
        "sampler.refresh_every=7",
    ]
    reference = train(compose_train([*overrides, "trainer.max_epochs=2"], tmp_path / "reference"))
    run = tmp_path / "run"
    train(compose_train([*overrides, "trainer.max_epochs=1"], run))
    # continued in its own directory, as a resume does (ModelCheckpoint keeps its best only there)
    resumed = train(
        compose_train([*overrides, "trainer.max_epochs=2", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], run)
    )
    assert resumed["global_step"] == reference["global_step"] == 214
    # measured: 24.768 both; 24.560 resumed when the sampler's state was not restored
    assert [r["val/ppl"] for r in resumed["history"]] == [r["val/ppl"] for r in reference["history"]]
    for metric in ("val/ppl", "val/ppl_last", "test/ppl"):
        assert resumed[metric] == reference[metric], metric


def test_a_checkpoint_from_before_a_finish_exact_switch_loads_into_the_switched_module(tmp_path):
    """finish_exact tests its best checkpoint, which may be a sampled epoch's: the exact module has no place
    for the kernel sampler's state, and a strict load must not fail on it."""
    from nslm.losses import FullSoftmaxLoss

    cfg = compose_train(["loss=sampled_softmax", "sampler=kernel", "sampler.rank=4"], tmp_path / "run")
    vocab = Vocabulary(["<eos>", "<unk>", *(f"w{i}" for i in range(V - 2))], list(range(V, 0, -1)))
    module = build_module(cfg, vocab)
    checkpoint = {"state_dict": dict(module.state_dict())}
    assert "loss.sampler._extra_state" in checkpoint["state_dict"]
    module.loss = FullSoftmaxLoss()  # what FinishExact does at the switch
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])  # strict
    assert "loss.sampler._extra_state" not in checkpoint["state_dict"]
