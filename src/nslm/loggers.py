"""Experiment loggers from the `logger` group, with W&B runs named, tagged and grouped for sweeps.

Every logger receives the same metric names (`train/loss`, `val/ppl`, ...). For `logger=wandb` the fields
left null are filled from the run itself:

- `group`: one id per Hydra multirun (`<task>-<sweep dir name>`), so the dashboard groups a sweep;
- `name`: readable, e.g. `sampled_softmax-unigram-k1024-ptb#3` (`#3`: the job number in a multirun);
- `tags`: the config's `tags` plus loss, sampler, k and corpus;
- `id`: kept in `<output_dir>/wandb_run_id`, so a resumed run continues the same W&B run.

W&B across kills and resumes (`WandbStepLogger`):
- every row is logged at W&B step = the trainer's global step, so the segments of a resumed run continue
  one step count (W&B's own counter restarts at 0 in every process);
- online, a resumed segment rewinds the run to its checkpoint's step (`resume_from=<id>?_step=<N>`): rows
  the killed segment logged after its last checkpoint are replaced, not collided with. Offline (where
  W&B ignores resume) each segment is its own `offline-run-*` directory; `wandb sync` them in order;
- the transaction log is flushed to disk every `logger.wandb.flush_seconds` (5 s; W&B's default is 15 s):
  a SIGKILLed segment loses at most the metrics of its last few seconds;
- the run's summary carries the best `val/ppl` (the checkpoint tested), the final `test/ppl` and the
  run's `wall_seconds`; `train/tokens_seen` is logged so panels can compare objectives at equal tokens;
- the exit code W&B records is the run's own (0, 2 for a user error, 1 for a bug, 128 + signal when
  preempted).

A resumed run's CSV log continues its `metrics.csv` (Lightning's CSV writer would delete it).
"""

from __future__ import annotations

import csv
import os
import secrets
import string
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from nslm.run_record import run_label
from nslm.utils.atomic import atomic_path, atomic_write_text

WANDB_ID_FILE = "wandb_run_id"


def _choice(cfg: DictConfig, group: str) -> str | None:
    """The option picked for a config group (`loss=nce` -> `nce`); from the target's module without Hydra."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return str(choice)
    node = cfg.get(group)
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    return target.rsplit(".", 2)[-2] if target else None


def run_labels(cfg: DictConfig) -> dict[str, Any]:
    """What distinguishes this run: objective, sampler and k (sampled objectives only), corpus."""
    loss = _choice(cfg, "loss") or "full"
    labels: dict[str, Any] = {"loss": loss, "corpus": _choice(cfg, "data") or "corpus"}
    if loss != "full" and cfg.get("loss") and "num_negatives" in cfg.loss:
        labels["sampler"] = _choice(cfg, "sampler")
        labels["k"] = int(cfg.loss.num_negatives)
    return labels


def _multirun() -> tuple[str, int] | None:
    """(sweep id, job number) inside a Hydra multirun."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    return f"{hydra_cfg.job.name}-{Path(hydra_cfg.sweep.dir).name}", int(hydra_cfg.job.num)


def wandb_settings(
    entry: DictConfig, cfg: DictConfig, output_dir: Path, resumed_step: int | None = None
) -> dict[str, Any]:
    """The WandbLogger's arguments with the run's name, group, tags and a stable id filled in."""
    settings = OmegaConf.to_container(entry, resolve=True)
    labels = run_labels(cfg)
    sweep = _multirun()
    if settings.get("group") is None and sweep is not None:
        settings["group"] = sweep[0]
    if settings.get("name") is None:
        name = f"{run_label(labels['loss'], labels.get('sampler'), labels.get('k'), sep='-')}-{labels['corpus']}"
        settings["name"] = f"{name}#{sweep[1]}" if sweep is not None else name
    tags = [str(tag) for tag in settings.get("tags") or []]
    tags += [f"{key}={value}" if key == "k" else str(value) for key, value in labels.items() if value is not None]
    settings["tags"] = list(dict.fromkeys(tags))  # unique, in order
    if settings.get("id") is None:
        id_file = output_dir / WANDB_ID_FILE
        if id_file.is_file():  # a resumed run: continue the same W&B run
            settings["id"] = id_file.read_text().strip()
        else:  # W&B's own id format: 8 lowercase letters and digits
            settings["id"] = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
            atomic_write_text(id_file, settings["id"] + "\n")
        settings.setdefault("resume", "allow")
    flush_seconds = float(settings.pop("flush_seconds", 5.0))
    settings["settings"] = {**(settings.get("settings") or {}), "x_transaction_log_flush_interval": flush_seconds}
    settings["_convert_"] = "all"  # plain dicts for wandb.init (it ignores an OmegaConf DictConfig)
    if resumed_step is not None and not _offline(settings) and settings.get("resume") == "allow":
        settings.pop("resume")  # rewind the run to the checkpoint instead (wandb >= 0.17.1)
        settings["resume_from"] = f"{settings['id']}?_step={resumed_step}"
    return settings


def _offline(settings: dict[str, Any]) -> bool:
    return bool(settings.get("offline")) or os.environ.get("WANDB_MODE", "") in ("offline", "dryrun", "disabled")


class WandbStepLogger(WandbLogger):
    """Lightning's WandbLogger, logging every row at W&B step = trainer.global_step (see the module doc)."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:
            return super().log_metrics(metrics, step)
        self.experiment.log({**metrics, "trainer/global_step": step}, step=int(step))


def write_summaries(loggers: list[Any], results: dict[str, Any]) -> None:
    """The figures a dashboard compares runs by, in each W&B run's summary (W&B would keep the last)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            names = ("val/ppl", "test/ppl", "wall_seconds", "val/ppl_over_oracle", "test/ppl_over_oracle")
            logger.experiment.summary.update({name: results[name] for name in names if results.get(name) is not None})


def build_loggers(cfg: DictConfig, output_dir: Path, resumed_step: int | None = None) -> list[Any]:
    """The `logger` group's loggers; `resumed_step`: the global step of the checkpoint a run resumes from."""
    loggers = []
    for entry in (cfg.get("logger") or {}).values():
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            continue
        if entry._target_.endswith(("WandbLogger", "WandbStepLogger")):
            loggers.append(instantiate(wandb_settings(entry, cfg, output_dir, resumed_step)))
        else:
            loggers.append(instantiate(entry))
    if resumed_step is not None:
        for logger in loggers:
            if isinstance(logger, CSVLogger):
                continue_csv_log(logger, resumed_step)
    return loggers


def continue_csv_log(logger: Any, resumed_step: int) -> None:
    """Keep the rows a resumed run logged up to its checkpoint: Lightning's CSV writer deletes an existing
    metrics.csv when it starts, so it is read first and handed back to the new writer."""
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = [row for row in reader if not row.get("step") or int(row["step"]) <= resumed_step]
    writer = logger.experiment  # created now: it removes metrics.csv
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        table = csv.DictWriter(handle, fieldnames=header)
        table.writeheader()
        table.writerows(rows)
    writer.metrics_keys = sorted(header)  # later rows append under this header (rewritten if keys change)


def finish_wandb(exit_code: int = 0) -> None:
    """Close the W&B run so the next job of a multirun (same process) starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)
