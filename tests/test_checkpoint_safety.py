"""A checkpoint is data, never code: every entry point reads it with weights_only=True and refuses a
crafted, corrupt, truncated, empty or foreign file with one line and exit status 2."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import torch

from nslm.checkpoint import CheckpointError, read_checkpoint
from nslm.train import train
from tests.helpers import REPO, compose_train, run_train_cli, tiny_overrides


class WritesMarker:
    """Unpickling this object calls Path.write_text(marker): what a payload in a crafted .ckpt does."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "the checkpoint ran code"))


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> pathlib.Path:
    from tests.helpers import write_corpus

    base = tmp_path_factory.mktemp("real")
    corpus = write_corpus(base / "corpus")
    cfg = compose_train([*tiny_overrides(corpus), "trainer.max_epochs=1", "logger=[]", "test=false"], base / "run")
    train(cfg)
    return base / "run" / "checkpoints" / "last.ckpt"


def bad_files(real: pathlib.Path, directory: pathlib.Path) -> dict[str, pathlib.Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = real.read_bytes()
    files = {name: directory / f"{name}.ckpt" for name in ("truncated", "empty", "garbage", "random", "foreign")}
    files["random"].write_bytes(bytes(torch.randint(256, (100,), generator=torch.Generator().manual_seed(3)).tolist()))
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty"].write_bytes(b"")
    files["garbage"].write_bytes(b"this is not a checkpoint\n" * 100)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, files["foreign"])  # someone else's file
    return files


def crafted(real: pathlib.Path, path: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    """A real nslm checkpoint with one extra entry whose unpickling would write `marker`."""
    checkpoint = torch.load(real, weights_only=True)
    checkpoint["callbacks"]["payload"] = WritesMarker(marker)
    torch.save(checkpoint, path)
    return path


def test_real_checkpoints_load_as_plain_data(real_checkpoint):
    checkpoint = read_checkpoint(real_checkpoint)
    assert checkpoint["nslm"]["vocab_itos"] and checkpoint["state_dict"]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "is corrupt or truncated"),
        ("empty", "is empty"),
        ("garbage", "is corrupt or truncated"),
        ("random", "is corrupt or truncated"),  # (not "holds Python objects": it is no pickle at all)
        ("foreign", "is not an nslm checkpoint"),
    ],
)
def test_unusable_files_are_one_line_errors(real_checkpoint, tmp_path, kind, message):
    path = bad_files(real_checkpoint, tmp_path)[kind]
    with pytest.raises(CheckpointError, match=message) as caught:
        read_checkpoint(path)
    assert "\n" not in str(caught.value)
    # nslm-train ckpt_path=<file> refuses it before anything is built or written
    with pytest.raises(CheckpointError, match=message):
        train(compose_train(["ckpt_path=" + str(path), "logger=[]"], tmp_path / "run"))
    assert not (tmp_path / "run" / "results.json").exists()


def _cli(program: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"nslm.{program}", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def _one_error_line(done: subprocess.CompletedProcess, program: str, message: str) -> None:
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{program}: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr


def test_a_crafted_checkpoint_runs_no_code_under_any_entry_point(real_checkpoint, tiny_corpus, tmp_path):
    marker = tmp_path / "marker"
    bad = crafted(real_checkpoint, tmp_path / "crafted.ckpt", marker)
    torch.load(bad, weights_only=False)  # the payload is real: an unrestricted load runs it
    assert marker.read_text() == "the checkpoint ran code"
    marker.unlink()

    _one_error_line(_cli("eval", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'e'}"), "nslm-eval", "refusing")
    _one_error_line(_cli("generate", f"ckpt_path={bad}"), "nslm-generate", "could run code")
    train_run = run_train_cli(*tiny_overrides(tiny_corpus), f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 't'}")
    _one_error_line(train_run, "nslm-train", "refusing")
    assert not marker.exists()


@pytest.mark.parametrize("program", ["eval", "generate"])
def test_eval_and_generate_refuse_a_truncated_checkpoint_in_one_line(real_checkpoint, tmp_path, program):
    path = bad_files(real_checkpoint, tmp_path)["truncated"]
    extra = [f"hydra.run.dir={tmp_path / 'e'}"] if program == "eval" else []
    _one_error_line(_cli(program, f"ckpt_path={path}", *extra), f"nslm-{program}", "is corrupt or truncated")


def test_a_checkpoint_of_another_model_is_one_line_not_a_size_mismatch(real_checkpoint, tiny_corpus, tmp_path):
    """torch's load_state_dict raises a many-line RuntimeError; the user chose the model, so one line."""
    from nslm.checkpoint import checkpoint_vocabulary, module_from_checkpoint, weights_mismatch

    checkpoint = read_checkpoint(real_checkpoint)
    wider = run_train_cli(*tiny_overrides(tiny_corpus), f"ckpt_path={real_checkpoint}", "model.net.hidden_dim=24",
                          f"hydra.run.dir={tmp_path / 'wider'}")  # fmt: skip
    _one_error_line(wider, "nslm-train", "was trained with another model")
    assert "resume=false" in wider.stderr

    no_weights = {key: value for key, value in checkpoint.items() if key != "state_dict"}
    assert "no state_dict" in weights_mismatch(torch.nn.Linear(2, 2), no_weights)
    resized = dict(checkpoint, state_dict=dict(checkpoint["state_dict"]))
    name = next(key for key, value in resized["state_dict"].items() if value.dim() == 2)
    resized["state_dict"][name] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=f"{name} is \\[3, 3\\]"):
        module_from_checkpoint(resized, checkpoint_vocabulary(resized))


def test_a_directory_is_named_as_one(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory; pass a file in it"):
        read_checkpoint(tmp_path)
