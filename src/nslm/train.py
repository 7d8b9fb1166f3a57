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
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from nslm.build import build_module
from nslm.callbacks import (
    FinishExact,
    MidEpochResume,
    OracleRatio,
    Preempted,
    Preemption,
    TokenThroughput,
    ValidationHistory,
)
from nslm.checkpoint import CheckpointMetadata, read_checkpoint, run_metadata, weights_mismatch
from nslm.data.datamodule import SyntheticDataModule
from nslm.distributed import export_submitit_rank_env, process_rank, run_ddp_children_on_job_config
from nslm.distributed.strategy import check_strategy
from nslm.errors import ConfigError, exit_on_user_error, user_error
from nslm.loggers import build_loggers, finish_wandb, write_summaries
from nslm.metrics import describe_buckets
from nslm.resume import keep_resume, resolve_resume
from nslm.run_lock import RunLock
from nslm.run_record import RunResults, write_completed, write_failed
from nslm.utils.config_tree import print_config_tree
from nslm.utils.instantiate import count_parameters, instantiate_each, instantiate_trainer
from nslm.utils.paths import config_dir

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> RunResults:
    """Train and/or test as `cfg` says; return the run record written to `<output_dir>/results.json`."""
    started = time.perf_counter()
    job_dir = Path(cfg.paths.output_dir)  # where Hydra put this job; may differ from output_dir on resume
    preemption = Preemption(job_dir)  # from here on a signal is recorded, never a default action
    preemption.install()
    try:
        return _train(cfg, preemption, started, job_dir)
    finally:
        preemption.uninstall()


def _train(cfg: DictConfig, preemption: Preemption, started: float, job_dir: Path) -> RunResults:
    auto_resumed = resolve_resume(cfg)
    # read safely (weights_only) and checked before Lightning touches it: one line if it is unusable
    resume_from = read_checkpoint(cfg.ckpt_path, mmap=True) if cfg.get("ckpt_path") else None

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # every process may call it: the cache is published atomically
    corpus = (datamodule.cache.directory.name, datamodule.vocab.fingerprint)
    if resume_from is not None and not keep_resume(cfg, resume_from, auto_resumed, job_dir, corpus):
        resume_from = None
    lock = RunLock(Path(cfg.paths.output_dir)) if process_rank() == 0 else None  # rank 0 owns the run
    if lock is not None:
        lock.acquire()
    try:
        return _fit_and_test(cfg, datamodule, resume_from, started, job_dir, preemption)
    finally:
        if lock is not None:
            lock.release()


def _fit_and_test(
    cfg: DictConfig, datamodule, resume_from: dict | None, started: float, job_dir: Path, preemption: Preemption
) -> RunResults:
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)  # the resumed run's, once resolve_resume/keep_resume have decided
    preemption.output_dir, preemption.checkpoint = output_dir, output_dir / "checkpoints" / "preempted.ckpt"
    preemption.resumable_after_training = bool(cfg.get("train"))
    module = build_module(cfg, datamodule.vocab)
    if resume_from is not None and (problem := weights_mismatch(module, resume_from)):
        raise ConfigError(
            f"{cfg.ckpt_path} was trained with another model than this config builds ({problem}): resume with "
            "the run's own model/loss settings, or start afresh (resume=false, ckpt_path=null)"
        )
    metadata = run_metadata(cfg, datamodule.vocab, corpus_key=datamodule.cache.directory.name)

    throughput, history = TokenThroughput(), ValidationHistory()
    oracle = OracleRatio(datamodule.oracle_ppl) if isinstance(datamodule, SyntheticDataModule) else None
    finish = finish_exact_settings(cfg.get("finish_exact"))
    wants_finish = finish.get("epochs") is not None or finish.get("fraction") is not None
    finish_exact = FinishExact(finish.get("epochs"), finish.get("fraction")) if wants_finish else None
    callbacks = [
        *instantiate_each(cfg.get("callbacks")),
        throughput,
        *([oracle] if oracle else []),  # before the history, which records the ratio
        *([finish_exact] if finish_exact else []),
        history,
        MidEpochResume(datamodule),
        preemption,
        CheckpointMetadata(metadata),
    ]
    if not cfg.trainer.get("enable_progress_bar", True):  # the flag wins over a configured bar
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    loggers = build_loggers(cfg, output_dir, resume_from["global_step"] if resume_from else None)
    trainer: pl.Trainer = instantiate_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_strategy(trainer, module)
    for logger in loggers:
        logger.log_hyperparams(metadata["config"])
    del resume_from  # (memory-mapped)

    preemption.stop_if_signalled_before_fit(process_rank())
    if cfg.get("train"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    if cfg.get("train") and trainer.global_step == 0:
        log.warning("no training step was taken (trainer.limit_train_batches / max_steps?): the figures below "
                    "are the untrained model's")  # fmt: skip
    val_last = module.last_eval.get("val/ppl")
    if val_last is None and history.records:  # a resumed fit with nothing left to train validates nothing
        val_last = history.records[-1].get("val/ppl")
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, weights_only=True)

    val_ppl = float(best_score) if best_score is not None else val_last
    results: RunResults = {
        "val/ppl": val_ppl,
        "val/ppl_last": val_last,
        "test/ppl": module.last_eval.get("test/ppl"),
        # by frequency of the target word (nslm.metrics): test of the best checkpoint; val per epoch in history
        **{name: value for name, value in module.last_eval.items() if name.startswith("test/ppl_bucket_")},
        "frequency_buckets": describe_buckets(datamodule.vocab.counts, module.test_ppl.bucket_of),
        **(oracle.results(val_ppl, module.last_eval.get("test/ppl")) if oracle else {}),
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
        write_completed([output_dir, job_dir], results)  # a resumed run reports in both places
        write_summaries(loggers, results)
        log.info(
            "done: val ppl %s | test ppl %s | %.0f tokens/s | outputs in %s",
            _fmt(results["val/ppl"]),
            _fmt(results["test/ppl"]),
            results["train/tokens_per_sec"],
            output_dir,
        )
    return {**results, "status": "completed"}


def finish_exact_settings(node: Any) -> dict[str, Any]:
    """`finish_exact: {epochs, fraction}` checked for shape: `finish_exact=3` or a typo (`epoch`) is one line."""
    if node is None:
        return {}
    if not isinstance(node, (dict, DictConfig)):
        raise ConfigError(f"finish_exact must be a group, e.g. finish_exact.epochs=3, got {node!r}")
    unknown = sorted(set(node) - {"epochs", "fraction"})
    if unknown:
        raise ConfigError(f"finish_exact has no setting {', '.join(unknown)}: use finish_exact.epochs or .fraction")
    return dict(node)


def record_failure(cfg: DictConfig, error: BaseException) -> None:
    """A failed job leaves a `results.json` saying so (sweep summaries list it); a finished one is kept."""
    if process_rank() != 0:
        return
    try:
        output_dir = Path(cfg.paths.output_dir)
    except Exception:  # the config itself is what failed
        return
    write_failed(output_dir, error)


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
    except Preempted as stop:  # saved, recorded as interrupted: the same command resumes
        finish_wandb(exit_code=stop.exit_code)
        print(f"nslm-train: {stop}", file=sys.stderr)
        raise SystemExit(stop.exit_code) from None
    except Exception as err:
        record_failure(cfg, err)
        finish_wandb(exit_code=2 if user_error(err) is not None else 1)
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
