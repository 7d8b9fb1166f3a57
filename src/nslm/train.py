"""`nslm-train`: compose the config, build data, model and trainer from it, train, test, write results.

    nslm-train experiment=ptb_example trainer.max_epochs=1
    nslm-train -m model.net.hidden_dim=200,650          # a Hydra multirun sweep

Returns the optimised metric (exact `val/ppl`) so Hydra sweepers can minimise it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from nslm.build import build_module
from nslm.callbacks import MidEpochResume, TokenThroughput, ValidationHistory
from nslm.checkpoint import CheckpointMetadata, read_checkpoint, run_metadata
from nslm.distributed import (
    export_submitit_rank_env,
    process_rank,
    run_ddp_children_on_job_config,
    share_with_ddp_children,
)
from nslm.distributed.strategy import SparseAwareDDPStrategy
from nslm.errors import ConfigError, exit_on_user_error, user_error
from nslm.loggers import build_loggers, finish_wandb
from nslm.resume import find_interrupted_run, is_finished, latest_checkpoint
from nslm.utils.atomic import atomic_write_json
from nslm.utils.config_tree import print_config_tree
from nslm.utils.instantiate import count_parameters, instantiate_each
from nslm.utils.paths import config_dir

log = logging.getLogger(__name__)


def resolve_resume(cfg: DictConfig) -> None:
    """With `resume: auto` and no `ckpt_path`, continue this run's interrupted predecessor (nslm.resume)."""
    share_with_ddp_children([])  # nothing carried over from a previous job of the same multirun
    if cfg.get("ckpt_path") or str(cfg.get("resume")).lower() != "auto" or not cfg.get("train"):
        return
    output_dir = Path(cfg.paths.output_dir)
    found = None
    if (own := latest_checkpoint(output_dir)) is not None:  # requeued into the same directory
        found = (output_dir, own)
    elif HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        task_dir = Path(cfg.paths.log_dir) / str(cfg.task_name)
        found = find_interrupted_run(task_dir, list(hydra_cfg.overrides.task), output_dir)
    if found is None:
        return
    run_dir, checkpoint = found
    log.info("resuming the interrupted run in %s from %s", run_dir, checkpoint.name)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.ckpt_path = str(checkpoint)
    # DDP ranks that Lightning starts later must continue the same run from the same checkpoint
    share_with_ddp_children([f'paths.output_dir="{run_dir}"', f'ckpt_path="{checkpoint}"', "resume=false"])


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and/or test as `cfg` says; return the results written to `<output_dir>/results.json`."""
    started = time.perf_counter()
    job_dir = Path(cfg.paths.output_dir)  # where Hydra put this job; may differ from output_dir on resume
    resolve_resume(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    # read safely (weights_only) and checked before Lightning touches it: one line if it is unusable
    resume_from = read_checkpoint(cfg.ckpt_path, mmap=True) if cfg.get("ckpt_path") else None

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # every process may call it: the cache is published atomically
    module = build_module(cfg, datamodule.vocab)
    metadata = run_metadata(cfg, datamodule.vocab)

    throughput, history = TokenThroughput(), ValidationHistory()
    callbacks = [
        *instantiate_each(cfg.get("callbacks")),
        throughput,
        history,
        MidEpochResume(datamodule),
        CheckpointMetadata(metadata),
    ]
    if not cfg.trainer.get("enable_progress_bar", True):  # the flag wins over a configured bar
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    loggers = build_loggers(cfg, output_dir, resume_from["global_step"] if resume_from else None)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_strategy(trainer, module)
    for logger in loggers:
        logger.log_hyperparams(metadata["config"])
    del resume_from  # (memory-mapped)

    if cfg.get("train"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    val_last = module.last_eval.get("val/ppl")
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, weights_only=True)

    results = {
        "status": "completed",
        "val/ppl": float(best_score) if best_score is not None else val_last,
        "val/ppl_last": val_last,
        "test/ppl": module.last_eval.get("test/ppl"),
        **oracle_ratios(module.last_eval, best_score, datamodule.oracle_ppl),
        "train/tokens_per_sec": throughput.tokens_per_sec,
        "train/median_step_seconds": throughput.median_step_seconds,
        # this command's time plus the fit time of the segments before it, when it resumed a killed run
        "wall_seconds": time.perf_counter() - started + history.carried_seconds,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "num_parameters": count_parameters(module.net),
        "vocab_size": len(datamodule.vocab),
        "best_checkpoint": best_path,
        "history": history.records,  # val ppl after each validation, with fit seconds so far (all segments)
        "resumed_from": cfg.get("ckpt_path"),
        "output_dir": str(output_dir),
        "config": metadata["config"],
    }
    if trainer.is_global_zero:
        for directory in dict.fromkeys([output_dir, job_dir]):  # a resumed run reports in both places
            atomic_write_json(directory / "results.json", results)
        log.info(
            "done: val ppl %s | test ppl %s | %.0f tokens/s | outputs in %s",
            _fmt(results["val/ppl"]),
            _fmt(results["test/ppl"]),
            results["train/tokens_per_sec"],
            output_dir,
        )
    return results


def check_strategy(trainer: pl.Trainer, module: pl.LightningModule) -> None:
    """Sparse tables need nslm's DDP strategy across processes: Lightning's own would crash at the first
    backward (gloo) or could not work at all (NCCL has no sparse all-reduce)."""
    if trainer.world_size <= 1 or isinstance(trainer.strategy, SparseAwareDDPStrategy):
        return
    if module.sparse_parameters():
        raise ConfigError(
            f"trainer.strategy={type(trainer.strategy).__name__} cannot synchronise the sparse gradients of "
            "loss.sparse_gradients / model.net.sparse_embedding across processes; use trainer=ddp (GPUs), "
            "trainer=ddp_cpu or trainer=slurm, which select nslm's sparse-aware DDP"
        )


def oracle_ratios(last_eval: dict[str, float], best_val: Any, oracle: dict[str, float]) -> dict[str, float]:
    """ppl / oracle ppl for val (of the best checkpoint, like `val/ppl`) and test, where an oracle exists."""
    if not oracle:
        return {}
    val = float(best_val) if best_val is not None else last_eval.get("val/ppl")
    test = last_eval.get("test/ppl")
    ratios = {"val/oracle_ppl": oracle["val"], "test/oracle_ppl": oracle["test"]}
    ratios["val/ppl_over_oracle"] = val / oracle["val"] if val is not None else None
    ratios["test/ppl_over_oracle"] = test / oracle["test"] if test is not None else None
    return ratios


def record_failure(cfg: DictConfig, error: BaseException) -> None:
    """A failed job leaves a `results.json` saying so (sweep summaries list it); a finished one is kept."""
    if process_rank() != 0:
        return
    try:
        output_dir = Path(cfg.paths.output_dir)
    except Exception:  # the config itself is what failed
        return
    if is_finished(output_dir):
        return
    failure = {"status": "failed", "error": f"{type(error).__name__}: {error}", "output_dir": str(output_dir)}
    atomic_write_json(output_dir / "results.json", failure)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _run(cfg: DictConfig) -> float | None:
    run_ddp_children_on_job_config()
    export_submitit_rank_env()
    if cfg.get("print_config") and process_rank() == 0:
        print_config_tree(cfg, save_to=Path(HydraConfig.get().runtime.output_dir) / "config_tree.log")
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = train(cfg)
    except Exception as err:
        record_failure(cfg, err)
        finish_wandb(exit_code=1)
        if multirun:  # Hydra records the failed job and goes on with the next one
            raise
        if (cause := user_error(err)) is not None:
            log.error("%s", cause)  # also in the run's log file
        exit_on_user_error("nslm-train", err)
    finish_wandb()
    value = results.get("val/ppl")
    return None if value is None else float(value)


def main() -> None:
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(_run)()


if __name__ == "__main__":
    main()
