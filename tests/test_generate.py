"""nslm-generate: sampling from a checkpoint, reproducible by seed, top-k and temperature honoured."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from nslm.checkpoint import checkpoint_vocabulary, module_from_checkpoint, read_checkpoint
from nslm.generate import _run, generate
from nslm.train import train
from tests.helpers import REPO, compose_train, tiny_overrides


@pytest.fixture
def checkpoint(tiny_corpus, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_corpus), "trainer.max_epochs=1", "logger=[]"], tmp_path / "run")
    train(cfg)
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


def load_net(path):
    checkpoint = read_checkpoint(path)
    vocab = checkpoint_vocabulary(checkpoint)
    return module_from_checkpoint(checkpoint, vocab).net, vocab


def test_generation_is_reproducible_by_seed_and_honours_top_k(checkpoint):
    net, vocab = load_net(checkpoint)
    first = generate(net, vocab, "w1 w2", num_words=40, seed=3)
    assert len(first) == 40 and set(first) <= set(vocab.itos)
    assert generate(net, vocab, "w1 w2", num_words=40, seed=3) == first
    assert generate(net, vocab, "w1 w2", num_words=40, seed=4) != first
    greedy = [generate(net, vocab, "w1", num_words=10, top_k=1, seed=seed) for seed in (1, 2)]
    assert greedy[0] == greedy[1]  # top_k=1 leaves one choice: the seed no longer matters
    # top_k=3 at a flattening temperature: replay the model, every word must be among that step's 3 best
    words = generate(net, vocab, "w1", num_words=50, top_k=3, temperature=5.0, seed=5)
    hidden, inputs = None, torch.tensor([[vocab.stoi["w1"]]])
    with torch.no_grad():
        for word in words:
            features, hidden = net(inputs, hidden)
            logits = F.linear(features[-1, 0], net.output_weight, net.output_bias)
            assert vocab.stoi[word] in torch.topk(logits, 3).indices.tolist()
            inputs = torch.tensor([[vocab.stoi[word]]])
    assert len(set(words)) > 1  # and the temperature really spread the choice over them


def test_cli_prints_text_and_rejects_bad_settings_in_one_line(checkpoint):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "nslm.generate", f"ckpt_path={checkpoint}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = run("prompt=w1 w2", "num_words=30", "seed=1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("w1 w2 ")
    words = done.stdout.split()  # <eos> is printed as a line break
    assert 2 < len(words) <= 32 and set(words) <= set(load_net(checkpoint)[1].itos)
    for value in ("0", "nan"):
        bad = run(f"temperature={value}")
        assert bad.returncode == 2 and bad.stderr.strip().startswith("nslm-generate: error: temperature must be > 0")
    bad = run("num_words=abc")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("nslm-generate: error: num_words must be a whole number, got 'abc'")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("num_words", "abc", "num_words must be a whole number, got 'abc'"), ("top_k", 2.5, "top_k must be a whole"),
     ("seed", True, "seed must be a whole"), ("temperature", "hot", "temperature must be a number, got 'hot'")],
)  # fmt: skip
def test_settings_of_the_wrong_kind_are_one_line_errors(key, value, message, monkeypatch, capsys):
    cfg = OmegaConf.create({"ckpt_path": "/nonexistent.ckpt", "prompt": "", "num_words": 5, "temperature": 1.0,
                            "top_k": 0, "seed": 1, key: value})  # fmt: skip
    with pytest.raises(SystemExit) as info:
        _run(cfg)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nslm-generate: error: {message}") and err.count("\n") == 1, err
