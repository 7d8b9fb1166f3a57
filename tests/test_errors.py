"""Bad input and bad luck: each gives one clear line and loses nothing (issue 6's list; the download,
checksum, zip-slip, empty-split, eval-vocabulary and NaN cases live beside their features)."""

from __future__ import annotations

import errno
import json
import logging

import pytest
import pytorch_lightning as pl
import torch
from fsspec.implementations.local import LocalFileOpener
from omegaconf import OmegaConf

from nslm.data import token_cache
from nslm.data.token_cache import prepare_token_cache
from nslm.errors import ConfigError, NslmError
from nslm.train import train
from nslm.utils.atomic import atomic_write_json
from nslm.utils.instantiate import instantiate_trainer
from tests.helpers import compose_train, run_train_cli, tiny_overrides


def test_an_unreadable_split_is_named(tiny_corpus, tmp_path, monkeypatch):
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if str(path) == str(tiny_corpus["test"]):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(token_cache, "open", refusing_open, raising=False)
    with pytest.raises(NslmError, match=r"cannot read the test split .*test.txt: Permission denied"):
        prepare_token_cache("tiny", tiny_corpus, tmp_path)


def test_undecodable_bytes_are_reported_with_their_count(tiny_corpus, tmp_path, caplog):
    with open(tiny_corpus["valid"], "ab") as handle:
        handle.write(b"na\xefve \xff\xfe words\n")
    with caplog.at_level(logging.WARNING):
        cache = prepare_token_cache("tiny", tiny_corpus, tmp_path)
    assert cache.meta["splits"]["valid"]["replaced_chars"] == 3
    warning = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(warning) == 1 and "valid.txt: 3 undecodable bytes replaced" in warning[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be a positive integer, got 0"),
        ("data.bptt=-5", "data.bptt must be a positive integer, got -5"),
        ("loss.num_negatives=0", "loss.num_negatives must be a positive integer, got 0"),
        ("loss.num_negatives=100000", "loss.num_negatives=100000 distinct ids cannot be drawn from a vocabulary"),
    ],
)
def test_bad_sizes_stop_the_cli_with_one_line(tiny_corpus, tmp_path, override, message):
    extra = ["loss=sampled_softmax", "loss.unique=true"] if override.startswith("loss") else []
    done = run_train_cli(*tiny_overrides(tiny_corpus), *extra, override, "debug=fdr", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("nslm-train: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("group", "typo"), [("loss", "sampled_sofmax"), ("sampler", "unigam")])
def test_an_unknown_loss_or_sampler_lists_the_options(tiny_corpus, tmp_path, group, typo):
    done = run_train_cli(*tiny_overrides(tiny_corpus), f"{group}={typo}", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 1
    assert f"Could not find '{group}/{typo}'" in done.stderr  # Hydra's own message ...
    options = done.stderr.split(f"Available options in '{group}':")[1]
    expected = ["full", "nce", "neg", "sampled_softmax"] if group == "loss" else ["in_batch", "unigram", "mixed"]
    assert all(name in options for name in expected)  # ... listing what exists


def test_results_json_survives_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"val/ppl": 100.0})

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", no_space)  # the write gets as far as flushing, then the disk is full
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(target, {"val/ppl": 90.0, "padding": "x" * 100_000})
    assert json.loads(target.read_text()) == {"val/ppl": 100.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind


def test_a_checkpoint_interrupted_while_written_keeps_the_previous_one(tiny_corpus, tmp_path, monkeypatch):
    cfg = compose_train([*tiny_overrides(tiny_corpus), "trainer.max_epochs=1", "test=false"], tmp_path)
    train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    trainer = pl.Trainer(logger=False, enable_progress_bar=False, max_epochs=1)
    module = torch.nn.Linear(3, 3)
    checkpoint = {"state_dict": module.state_dict(), "padding": torch.zeros(1_000_000)}
    written = []

    def write_then_fail(self, data):  # half the bytes reach the disk, then it is full
        written.append(len(data))
        self.f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalFileOpener, "write", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, last)
    assert written, "the checkpoint writer did not reach the disk"
    assert last.read_bytes() == before
    assert torch.load(last, weights_only=True)["nslm"]["vocab_fingerprint"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.devices=0", "the trainer settings were refused: `Trainer(devices=0)` value is not a valid input"),
        ("++trainer.max_epoch=3", "trainer.max_epoch is not an argument of pytorch_lightning.Trainer; did you mean "
                                  "trainer.max_epochs?"),
        ("trainer.accelerator=tpuu", "invalid accelerator name: `accelerator='tpuu'`"),
        ("trainer.gradient_clip_algorithm=nrm", "`gradient_clip_algorithm` nrm is invalid"),
        ("trainer.max_epochs=abc", "trainer.max_epochs must be a number, got 'abc'"),  # Lightning: AssertionError
    ],
)  # fmt: skip
def test_trainer_settings_lightning_refuses_are_one_config_error_line(tmp_path, override, message):
    cfg = compose_train([override], tmp_path)
    with pytest.raises(ConfigError) as info:
        instantiate_trainer(cfg.trainer, logger=False)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback either


def test_instantiate_trainer_builds_a_trainer_and_lets_bugs_through(tmp_path):
    trainer = instantiate_trainer(compose_train(["trainer.max_epochs=3"], tmp_path).trainer, logger=False)
    assert isinstance(trainer, pl.Trainer) and trainer.max_epochs == 3
    with pytest.raises(Exception, match="invalid literal") as info:  # raised outside Lightning: not a setting
        instantiate_trainer(OmegaConf.create({"_target_": "builtins.int", "_args_": ["x"]}))
    assert not isinstance(info.value, NslmError)


def test_spawned_ranks_are_refused_in_one_line(tmp_path):
    """ddp_spawn pickles the module back after the fit and the test then logs what its logger never saw."""
    from nslm.distributed.strategy import check_strategy

    cfg = compose_train(["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"], tmp_path)
    trainer = instantiate_trainer(cfg.trainer, logger=False)
    with pytest.raises(ConfigError, match=r"ddp_spawn .* is not supported; use trainer=ddp"):
        check_strategy(trainer, torch.nn.Linear(2, 2))


@pytest.mark.parametrize("alpha", ["abc", float("inf"), -1.0, True])
def test_a_bad_unigram_alpha_is_one_line(alpha):
    from nslm.samplers import UnigramSampler

    with pytest.raises(ConfigError, match=r"sampler\.alpha must be a number >= 0"):
        UnigramSampler([3, 2, 1], alpha=alpha)
