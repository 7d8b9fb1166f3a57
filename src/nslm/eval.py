"""`nslm-eval`: exact validation and test perplexity of a checkpoint.

    nslm-eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt          # on its own corpus
    nslm-eval ckpt_path=... data=ptb data.eval_batch_size=1                        # another corpus/layout

A checkpoint carries its config and vocabulary; a corpus whose vocabulary differs is refused (ids would
mean other words, and the perplexity would be garbage).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from nslm.checkpoint import METADATA_KEY, checkpoint_config, module_from_checkpoint, read_checkpoint
from nslm.errors import NslmError, exit_on_user_error
from nslm.utils.atomic import atomic_write_json
from nslm.utils.instantiate import instantiate_trainer
from nslm.utils.paths import config_dir

log = logging.getLogger(__name__)
#: what nslm-eval writes into its output directory (not results.json: an evaluation is not a training run)
EVAL_FILE = "eval.json"


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    checkpoint = read_checkpoint(cfg.ckpt_path)
    meta = checkpoint[METADATA_KEY]
    train_cfg = checkpoint_config(checkpoint)
    datamodule = instantiate(cfg.data if cfg.get("data") else train_cfg.data)
    datamodule.prepare_data()
    if datamodule.vocab.fingerprint != meta["vocab_fingerprint"]:
        raise NslmError(
            f"the corpus' vocabulary ({len(datamodule.vocab)} words, id {datamodule.vocab.fingerprint}) is not "
            f"the checkpoint's ({len(meta['vocab_itos'])} words, id {meta['vocab_fingerprint']}); evaluate on a "
            "corpus built with the same vocabulary (same training file and max_vocab_size/min_freq)"
        )
    module = module_from_checkpoint(checkpoint, datamodule.vocab)
    trainer: pl.Trainer = instantiate_trainer(cfg.trainer, logger=False, enable_checkpointing=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    results = {
        **module.last_eval,
        "ckpt_path": str(cfg.ckpt_path),
        "corpus": datamodule.corpus.name,
        "eval_batch_size": datamodule.hparams.eval_batch_size,
    }
    if trainer.is_global_zero:
        atomic_write_json(Path(cfg.paths.output_dir) / EVAL_FILE, results)
        log.info("val ppl %.2f | test ppl %.2f", results["val/ppl"], results["test/ppl"])
    return results


def _run(cfg: DictConfig) -> float:
    try:
        return evaluate(cfg)["test/ppl"]
    except Exception as err:
        exit_on_user_error("nslm-eval", err)


def main() -> None:
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")(_run)()


if __name__ == "__main__":
    main()
