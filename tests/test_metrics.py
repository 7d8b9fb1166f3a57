"""The ruler: exact split perplexity, by word-frequency bucket, with NaN never averaged away."""

from __future__ import annotations

import math

import pytest
import torch

from nslm.batch import IGNORE_INDEX
from nslm.metrics import SplitPerplexity, describe_buckets, frequency_buckets
from nslm.train import train
from tests.helpers import compose_train, tiny_overrides


def test_buckets_hold_equal_token_mass_most_frequent_first_and_unk_apart():
    counts = [100, 50, 30, 10, 5, 3, 2, 0]  # id 5 is <unk>; id 7 never occurs in training
    # worked by hand: without <unk> the masses are 100 50 30 10 5 2 0 (197 tokens); a word's bucket is
    # floor(2 x tokens of the more frequent words / 197): 0 for id 0 (0), 1 for all the others (>= 100)
    assert frequency_buckets(counts, unk_id=5, num_buckets=2).tolist() == [0, 1, 1, 1, 1, 2, 1, 1]
    # four buckets: before = 0, 100, 150, 180, 190, 195, 197 -> floor(4 x before / 197) = 0, 2, 3, 3, 3, 3, 3
    assert frequency_buckets(counts, unk_id=5, num_buckets=4).tolist() == [0, 2, 3, 3, 3, 4, 3, 3]
    described = describe_buckets(counts, frequency_buckets(counts, unk_id=5, num_buckets=2))
    assert [row["bucket"] for row in described] == ["bucket_0", "bucket_1", "bucket_unk"]
    assert [row["words"] for row in described] == [1, 6, 1]
    assert described[0]["train_token_share"] == pytest.approx(100 / 200)


def test_split_perplexity_is_exact_per_bucket_and_overall():
    torch.manual_seed(0)
    bucket_of = torch.tensor([0, 0, 1, 1, 1, 2])
    metric = SplitPerplexity(bucket_of)
    batches = [(torch.rand(7) * 5, torch.randint(0, 6, (7,))) for _ in range(4)]
    batches[1][1][2] = IGNORE_INDEX  # a padded position counts nowhere
    for nll, targets in batches:
        metric.update(nll, targets)
    values = metric.compute()
    sums: dict[int, list[float]] = {}
    for nll, targets in batches:  # the brute-force reference: plain Python over every token
        for value, target in zip(nll.tolist(), targets.tolist(), strict=True):
            if target != IGNORE_INDEX:
                sums.setdefault(int(bucket_of[target]), []).append(value)
    every = [v for values_ in sums.values() for v in values_]
    assert values["ppl"] == pytest.approx(math.exp(sum(every) / len(every)), rel=1e-12)
    for index, name in enumerate(["bucket_0", "bucket_1", "bucket_unk"]):
        expected = math.exp(sum(sums[index]) / len(sums[index]))
        assert values[f"ppl_{name}"] == pytest.approx(expected, rel=1e-12)


def test_a_nan_token_makes_the_split_nan_instead_of_being_dropped():
    metric = SplitPerplexity(torch.tensor([0, 0, 1]))
    metric.update(torch.tensor([1.0, float("nan"), 2.0]), torch.tensor([0, 1, 2]))
    values = metric.compute()
    assert math.isnan(values["ppl"]) and math.isnan(values["ppl_bucket_0"])
    assert values["ppl_bucket_unk"] == pytest.approx(math.exp(2.0))
    infinite = SplitPerplexity(torch.tensor([0, 0, 1]))
    infinite.update(torch.tensor([1.0, float("inf"), 2.0]), torch.tensor([0, 1, 2]))
    assert infinite.compute()["ppl"] == float("inf")


def test_a_run_reports_buckets_everywhere_and_a_nan_model_is_nan(tiny_corpus, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_corpus), "trainer.max_epochs=1", "logger=csv"], tmp_path)
    results = train(cfg)
    buckets = {name for name in results if name.startswith("test/ppl_bucket_")}
    assert {f"test/ppl_bucket_{b}" for b in range(4)} <= buckets <= {*buckets, "test/ppl_bucket_unk"}
    assert results["test/ppl_bucket_0"] < results["test/ppl"] < results["test/ppl_bucket_3"]  # rare words: harder
    assert [row["bucket"] for row in results["frequency_buckets"]][-1] == "bucket_unk"
    assert all(f"val/ppl_bucket_{b}" in results["history"][-1] for b in range(4))
    header = next(tmp_path.rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    assert {"val/ppl_bucket_0", "test/ppl_bucket_3"} <= set(header)

    # a diverged checkpoint: one NaN output weight poisons the test perplexity, it is not dropped
    from nslm.checkpoint import checkpoint_vocabulary, module_from_checkpoint, read_checkpoint
    from nslm.eval import evaluate

    checkpoint = read_checkpoint(results["best_checkpoint"])
    checkpoint["state_dict"]["net.decoder.bias"][3] = float("nan")
    poisoned = tmp_path / "poisoned.ckpt"
    torch.save(checkpoint, poisoned)
    assert module_from_checkpoint(read_checkpoint(poisoned), checkpoint_vocabulary(checkpoint)) is not None
    from tests.helpers import compose_eval

    scored = evaluate(compose_eval([f"ckpt_path={poisoned}", "trainer.enable_progress_bar=false"], tmp_path / "e"))
    assert math.isnan(scored["test/ppl"]) and math.isnan(scored["val/ppl"])
