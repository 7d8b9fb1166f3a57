"""Every option of every config group, and every experiment, composes and resolves."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nslm.utils.paths import config_dir

CONF = config_dir()
GROUPS = ["data", "model", "loss", "sampler", "trainer", "logger", "callbacks", "paths", "hydra", "experiment", "debug"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


CASES = [f"{group}={option}" for group in GROUPS for option in options(group)]
CASES += [f"model/{sub}={option}" for sub in ("optimizer", "scheduler") for option in options(f"model/{sub}")]


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"


@pytest.mark.parametrize("override", CASES)
def test_option_composes_and_resolves(override, tmp_path):
    extra = ["data.train_path=a", "data.valid_path=b", "data.test_path=c"] if "text_files" in override else []
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[override, *extra], return_hydra_config=True)
    cfg.paths.output_dir = str(tmp_path)  # ${hydra:runtime.output_dir} only exists inside a real run
    OmegaConf.resolve(cfg)
    assert OmegaConf.is_missing(cfg.model.net, "vocab_size")  # filled from the corpus at start


def test_eval_config_composes(tmp_path):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("eval", overrides=["ckpt_path=x.ckpt", "data=ptb"], return_hydra_config=True)
    assert cfg.data.corpus._target_.endswith("PennTreebank")


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_instantiates(experiment, tmp_path):
    """The model, optimizer and lr schedule of each experiment can be built (vocabulary of 100 words)."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    cfg.model.net.vocab_size = 100
    module = instantiate(cfg.model)
    optim = module.configure_optimizers()
    optimizer = optim["optimizer"] if isinstance(optim, dict) else optim
    assert optimizer.param_groups[0]["lr"] == cfg.model.optimizer.lr


def test_zaremba_schedules_match_the_paper():
    from nslm.optim import DecayAfterEpoch

    small = DecayAfterEpoch(start_epoch=4, gamma=0.5)
    assert [small(epoch) for epoch in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        large = compose("train", overrides=["experiment=ptb_zaremba_large"])
    assert large.model.scheduler.lr_lambda.gamma == pytest.approx(1 / 1.15)
    assert large.model.net.hidden_dim == 1500


@pytest.mark.parametrize(("size", "paper_clip"), [("small", 5.0), ("medium", 5.0), ("large", 10.0)])
def test_zaremba_updates_equal_the_papers_summed_loss(size, paper_clip):
    """The paper sums the loss over bptt steps (lr 1); nslm averages over tokens, so lr x bptt, clip / bptt."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment=ptb_zaremba_{size}"])
    bptt = cfg.data.bptt
    assert cfg.model.optimizer.lr == pytest.approx(1.0 * bptt)
    assert cfg.trainer.gradient_clip_val * bptt == pytest.approx(paper_clip)
