"""`nslm-generate`: text sampled from a trained model, word by word, as the classic example's generate.py.

    nslm-generate ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
    nslm-generate ckpt_path=... prompt="the company said" num_words=100 temperature=0.8 top_k=50 seed=1

The prompt is read through the checkpoint's vocabulary (unknown words become <unk>) to set the LSTM
state; then each next word is drawn from softmax(logits / temperature), restricted to the `top_k` most
likely words when top_k > 0. `<eos>` ends a line. Same checkpoint, prompt and seed: same text.
"""

from __future__ import annotations

import math

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from nslm.checkpoint import checkpoint_vocabulary, module_from_checkpoint, read_checkpoint
from nslm.data.vocab import EOS, Vocabulary
from nslm.errors import ConfigError, exit_on_user_error
from nslm.losses import OutputObjective
from nslm.utils.checks import is_number, is_whole_number
from nslm.utils.paths import config_dir


@torch.no_grad()
def generate(
    net: torch.nn.Module,
    vocab: Vocabulary,
    prompt: str,
    num_words: int,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 1,
    objective: OutputObjective | None = None,
) -> list[str]:
    """The words generated after `prompt` (the prompt itself not included). `objective`: the trained model's
    output layer (its `log_probs`); the network's own output embedding and softmax when omitted."""
    if num_words < 0:
        raise ConfigError(f"num_words must be >= 0, got {num_words}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature} (lower values give safer text)")
    if top_k < 0:
        raise ConfigError(f"top_k must be >= 0 (0: the whole vocabulary), got {top_k}")
    net.eval()
    output = objective if objective is not None else OutputObjective()  # full softmax over W, b
    generator = torch.Generator().manual_seed(seed)
    context = vocab.encode_words(prompt.split()) or [vocab.eos_id]  # no prompt: start as after a sentence
    inputs = torch.tensor(context, dtype=torch.long).unsqueeze(1)  # [time, batch=1]
    words: list[str] = []
    hidden = None
    for _ in range(num_words):
        features, hidden = net(inputs, hidden)
        # normalised log-probabilities: softmax(log p / T) = softmax(logits / T), the shift cancels
        logits = output.log_probs(features[-1], net.output_weight, net.output_bias)[0] / temperature
        if 0 < top_k < logits.numel():
            threshold = torch.topk(logits, top_k).values[-1]
            logits = logits.masked_fill(logits < threshold, float("-inf"))
        next_id = int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator))
        words.append(vocab.itos[next_id])
        inputs = torch.tensor([[next_id]])
    return words


def format_text(words: list[str]) -> str:
    return " ".join(words).replace(f" {EOS} ", "\n").replace(f" {EOS}", "\n").replace(f"{EOS} ", "\n")


def _number(cfg: DictConfig, key: str, kind: type) -> int | float:
    """`cfg[key]` as an int or float; a value of the wrong kind (`num_words=abc`) is a one-line error."""
    value = cfg[key]
    if not (is_number(value) if kind is float else is_whole_number(value)):
        example = {"num_words": 100, "top_k": 50, "seed": 1, "temperature": 0.8}[key]
        wanted = "a number" if kind is float else "a whole number"
        raise ConfigError(f"{key} must be {wanted}, got {value!r} (e.g. {key}={example})")
    return kind(value)


def _run(cfg: DictConfig) -> None:
    try:
        num_words, top_k, seed = (_number(cfg, key, int) for key in ("num_words", "top_k", "seed"))
        temperature = _number(cfg, "temperature", float)
        checkpoint = read_checkpoint(cfg.ckpt_path)
        vocab = checkpoint_vocabulary(checkpoint)
        module = module_from_checkpoint(checkpoint, vocab)
        prompt = str(cfg.prompt or "")
        words = generate(module.net, vocab, prompt, num_words, temperature, top_k, seed, objective=module.loss)
    except Exception as err:
        exit_on_user_error("nslm-generate", err)
    print(((str(cfg.prompt) + " ") if cfg.prompt else "") + format_text(words))


def main() -> None:
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="generate")(_run)()


if __name__ == "__main__":
    main()
