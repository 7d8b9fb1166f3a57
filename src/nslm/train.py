"""`nslm-train`: compose the config, build data, model and trainer from it, train, test, write results.

    nslm-train experiment=ptb_example trainer.max_epochs=1
    nslm-train -m model.net.hidden_dim=200,650          # a Hydra multirun sweep

Returns the optimised metric (exact `val/ppl`) so Hydra sweepers can minimise it.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from nslm.build import build_module
from nslm.callbacks import TokenThroughput
from nslm.errors import user_error
from nslm.utils.atomic import atomic_write_json
from nslm.utils.config_tree import print_config_tree
from nslm.utils.instantiate import count_parameters, instantiate_each
from nslm.utils.paths import config_dir

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and/or test as `cfg` says; return the results written to `<output_dir>/results.json`."""
    started = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # every process may call it: the cache is published atomically
    module = build_module(cfg, datamodule.vocab)

    throughput = TokenThroughput()
    callbacks = [*instantiate_each(cfg.get("callbacks")), throughput]
    if not cfg.trainer.get("enable_progress_bar", True):  # the flag wins over a configured bar
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    loggers = instantiate_each(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(module.metadata["config"])

    if cfg.get("train"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    val_last = module.last_eval.get("val/ppl")
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None)

    results = {
        "val/ppl": float(best_score) if best_score is not None else val_last,
        "val/ppl_last": val_last,
        "test/ppl": module.last_eval.get("test/ppl"),
        "train/tokens_per_sec": throughput.tokens_per_sec,
        "train/median_step_seconds": throughput.median_step_seconds,
        "wall_seconds": time.perf_counter() - started,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "num_parameters": count_parameters(module.net),
        "vocab_size": len(datamodule.vocab),
        "best_checkpoint": best_path,
        "output_dir": str(output_dir),
        "config": module.metadata["config"],
    }
    if trainer.is_global_zero:
        atomic_write_json(output_dir / "results.json", results)
        log.info(
            "done: val ppl %s | test ppl %s | %.0f tokens/s | outputs in %s",
            _fmt(results["val/ppl"]),
            _fmt(results["test/ppl"]),
            results["train/tokens_per_sec"],
            output_dir,
        )
    return results


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _run(cfg: DictConfig) -> float | None:
    if cfg.get("print_config"):
        print_config_tree(cfg, save_to=Path(HydraConfig.get().runtime.output_dir) / "config_tree.log")
    try:
        results = train(cfg)
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        log.error("%s", cause)
        print(f"nslm-train: error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None
    return results.get("val/ppl")


def main() -> None:
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(_run)()


if __name__ == "__main__":
    main()
