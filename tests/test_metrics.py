"""The ruler: exact split perplexity, by word-frequency bucket, with NaN never averaged away."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from nslm.batch import IGNORE_INDEX
from nslm.metrics import Float64Mean, SplitPerplexity, describe_buckets, frequency_buckets
from nslm.train import train
from tests.helpers import compose_train, tiny_overrides


def test_buckets_hold_equal_token_mass_most_frequent_first_and_unk_apart():
    counts = [100, 50, 30, 10, 5, 3, 2, 0]  # id 5 is <unk>; id 7 never occurs in training
    # worked by hand: without <unk> the masses are 100 50 30 10 5 2 0 (197 tokens); a word's bucket is
    # floor(2 x tokens of the more frequent words / 197): 0 for id 0 (0), 1 for all the others (>= 100)
    assert frequency_buckets(counts, unk_id=5, num_buckets=2).tolist() == [0, 1, 1, 1, 1, 2, 1, 1]
    # four buckets: before = 0, 100, 150, 180, 190, 195, 197 -> floor(4 x before / 197) = 0, 2, 3, 3, 3, 3, 3;
    # id 0 holds half the mass, so bucket 1 would be empty: the buckets in use (0, 2, 3) become 0, 1, 2
    assert frequency_buckets(counts, unk_id=5, num_buckets=4).tolist() == [0, 1, 2, 2, 2, 3, 2, 2]
    described = describe_buckets(counts, frequency_buckets(counts, unk_id=5, num_buckets=2))
    assert [row["bucket"] for row in described] == ["bucket_0", "bucket_1", "bucket_unk"]
    assert [row["words"] for row in described] == [1, 6, 1]
    assert described[0]["train_token_share"] == pytest.approx(100 / 200)


def test_buckets_are_numbered_without_gaps_when_one_word_holds_several_buckets_of_mass():
    # a 3-word corpus with 10 buckets asked for: id 0 is <unk> (never seen), ids 1..3 hold 5, 3, 2 of the
    # 10 tokens, id 4 is never seen. By hand: floor(10 x before / 10) = 0, 5, 8 for ids 1, 2, 3, i.e. the
    # used buckets 0, 5, 8, numbered 0, 1, 2; id 4 joins the rarest seen bucket (2); <unk> comes next (3)
    counts = [0, 5, 3, 2, 0]
    bucket_of = frequency_buckets(counts, unk_id=0, num_buckets=10)
    assert bucket_of.tolist() == [3, 0, 1, 2, 2]
    described = describe_buckets(counts, bucket_of)
    assert described == [
        {"bucket": "bucket_0", "words": 1, "train_token_share": pytest.approx(0.5)},
        {"bucket": "bucket_1", "words": 1, "train_token_share": pytest.approx(0.3)},
        {"bucket": "bucket_2", "words": 2, "train_token_share": pytest.approx(0.2)},
        {"bucket": "bucket_unk", "words": 1, "train_token_share": 0.0},
    ]
    # equal masses fill every bucket: the upper bound is reached and nothing is renumbered
    assert frequency_buckets([1, 1, 1, 1, 0], unk_id=4, num_buckets=4).tolist() == [0, 1, 2, 3, 4]


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


class _ScoreGivenNll(pl.LightningModule):
    """Feeds a validation batch's (nll, target) pairs straight to a SplitPerplexity, as the LM module does."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)  # a parameter for bf16-true to convert alongside the metric
        self.ppl = SplitPerplexity(torch.tensor([0, 1]))
        self.mean = Float64Mean(nan_strategy="disable")  # the LM module's mean log Z, the same way
        self.dtypes: set[torch.dtype] = set()
        self.values: dict[str, float] = {}

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        nll, targets = batch
        self.dtypes |= {self.layer.weight.dtype, nll.dtype, self.ppl.nll_sum.dtype, self.ppl.tokens.dtype}
        self.dtypes |= {self.mean.mean_value.dtype, self.mean.weight.dtype}
        self.ppl.update(nll, targets)
        self.mean.update(nll)

    def on_validation_epoch_end(self) -> None:
        self.values = {**self.ppl.compute(), "mean": float(self.mean.compute())}


def test_the_sums_stay_float64_under_bf16_true_precision():
    # Lightning's bf16-true calls module.to(torch.bfloat16), which reaches torchmetrics states
    module = _ScoreGivenNll()
    module.to(torch.bfloat16)
    assert module.layer.weight.dtype == torch.bfloat16
    assert module.ppl.nll_sum.dtype == module.ppl.tokens.dtype == module.mean.mean_value.dtype == torch.float64
    # a real bf16-true run: 300 tokens of NLL 1.25 (word 0) and 100 of NLL 3.0 (<unk>), exact in bf16.
    # By hand: ppl = exp((300 x 1.25 + 100 x 3) / 400) = exp(1.6875); a bf16 sum would not even hold 375
    nll = torch.tensor([1.25] * 300 + [3.0] * 100)
    targets = torch.tensor([0] * 300 + [1] * 100)
    loader = DataLoader(TensorDataset(nll, targets), batch_size=40)
    trainer = pl.Trainer(
        accelerator="cpu", precision="bf16-true", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    module = _ScoreGivenNll()
    trainer.validate(module, loader, verbose=False)
    assert module.dtypes == {torch.bfloat16, torch.float64}  # weights and inputs bf16, the sums float64
    assert module.values["ppl"] == pytest.approx(math.exp(1.6875), rel=1e-12)
    assert module.values["ppl_bucket_0"] == pytest.approx(math.exp(1.25), rel=1e-12)
    assert module.values["ppl_bucket_unk"] == pytest.approx(math.exp(3.0), rel=1e-12)
    assert module.values["mean"] == pytest.approx(1.6875, rel=1e-12)


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
