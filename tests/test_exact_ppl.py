"""Validation/test perplexity is exact: exp of the token-weighted mean NLL over the whole split."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from nslm.batch import IGNORE_INDEX
from nslm.data import TextFilesDataModule
from nslm.data.windows import StreamLayout
from nslm.lm_module import LanguageModelModule
from nslm.losses import exact_token_nll
from nslm.losses.exact import MAX_LOGITS_PER_CHUNK
from nslm.models.lstm import LSTMLanguageModel


def independent_ppl(net: LSTMLanguageModel, tokens: torch.Tensor, batch_size: int) -> float:
    """Each stream of the layout run in ONE forward pass from a zero state: no windows, no carried state,
    no metric object; plain log_softmax and a float64 sum."""
    layout = StreamLayout(len(tokens), batch_size)
    starts, ends = layout.stream_bounds()
    total, count = 0.0, 0
    net.eval()
    with torch.no_grad():
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            if end <= start:
                continue
            inputs = tokens[start:end].unsqueeze(1)
            targets = tokens[start + 1 : end + 1]
            features, _ = net(inputs)
            logits = features.squeeze(1) @ net.decoder.weight.T + net.decoder.bias
            total += -F.log_softmax(logits.double(), dim=-1).gather(1, targets[:, None]).sum().item()
            count += len(targets)
    return math.exp(total / count)


def test_validation_ppl_equals_an_independent_computation(tiny_corpus, tmp_path):
    torch.manual_seed(0)
    datamodule = TextFilesDataModule(
        str(tiny_corpus["train"]),
        str(tiny_corpus["valid"]),
        str(tiny_corpus["test"]),
        cache_dir=tmp_path,
        batch_size=4,
        eval_batch_size=3,
        bptt=7,
    )
    datamodule.prepare_data()
    net = LSTMLanguageModel(len(datamodule.vocab), 12, 12, num_layers=2, dropout=0.3)
    module = LanguageModelModule(net, optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    trainer = pl.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False
    )
    trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    for split, prefix in (("valid", "val"), ("test", "test")):
        tokens = torch.from_numpy(datamodule.cache.tokens(split).astype("int64"))
        expected = independent_ppl(net, tokens, batch_size=3)
        assert math.isclose(module.last_eval[f"{prefix}/ppl"], expected, rel_tol=1e-5)


def test_exact_nll_chunks_agree_with_one_shot(monkeypatch):
    torch.manual_seed(0)
    features, weight, bias = torch.randn(50, 8), torch.randn(300, 8), torch.randn(300)
    targets = torch.randint(0, 300, (50,))
    targets[[3, 17]] = IGNORE_INDEX
    whole, log_z = exact_token_nll(features, targets, weight, bias)
    monkeypatch.setattr("nslm.losses.exact.MAX_LOGITS_PER_CHUNK", 7 * 300)  # 7 rows per chunk
    chunked, chunked_log_z = exact_token_nll(features, targets, weight, bias)
    assert MAX_LOGITS_PER_CHUNK > 7 * 300
    assert torch.allclose(whole, chunked) and whole[3] == 0 and whole[17] == 0
    assert torch.allclose(log_z, chunked_log_z)
    logits = features @ weight.T + bias
    reference = F.cross_entropy(logits, targets, reduction="none")
    assert torch.allclose(whole, reference)
    assert torch.allclose(log_z, torch.logsumexp(logits, dim=-1))
