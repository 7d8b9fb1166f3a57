"""Starting ranks: DDP children under Hydra, ranks started by submitit, a process's rank before DDP exists.

Lightning's `ddp` strategy starts ranks 1..N-1 by re-running the command line. Under a Hydra multirun
that command is the whole sweep (`-m a=1,2 b=3,4`), so each child would launch the sweep again; and
Lightning points children at `hydra.run.dir`, which is not the job's directory in a multirun. nslm
instead starts each child on the job's own composed config (`<job dir>/.hydra/config.yaml`) in the
job's directory: one job, one set of ranks, in a single run and a multirun alike.

Under SLURM (submitit_slurm, or sbatch + srun) SLURM starts every rank and Lightning's SLURMEnvironment
takes over. Under `submitit_local`, the tasks are started by submitit, which sets no variables Lightning
reads: `export_submitit_rank_env` exports the usual torch.distributed ones from submitit's job env.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

#: overrides rank 0 decided at run time and its children must share (where a resumed run continues)
_child_overrides: list[str] = []


def share_with_ddp_children(overrides: list[str]) -> None:
    _child_overrides[:] = overrides


def _job_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    if not hydra_cfg.output_subdir:
        raise RuntimeError("DDP children read the job's .hydra/config.yaml: keep hydra.output_subdir set")
    command = [
        sys.executable,
        "-m",
        "nslm.train",
        "--config-path",
        str(job_dir / hydra_cfg.output_subdir),
        "--config-name",
        "config",
        f'hydra.run.dir="{job_dir}"',
        "hydra.output_subdir=null",  # the job's own .hydra/ stays rank 0's
        f"hydra.job.name=ddp_rank_{local_rank}",
        "print_config=false",
        *_child_overrides,
    ]
    return command, get_original_cwd()


def run_ddp_children_on_job_config() -> None:
    """Make Lightning's `ddp` launcher start children on this Hydra job's config (see module doc)."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = _job_subprocess_cmd


def process_rank() -> int:
    """This process's global rank, from the variables torch.distributed/Lightning (RANK, LOCAL_RANK) or
    SLURM (SLURM_PROCID) set; 0 outside a distributed job. Readable before the process group exists."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def export_submitit_rank_env() -> None:
    """Inside a multi-task submitit job not run by SLURM, export RANK/LOCAL_RANK/MASTER_* for Lightning."""
    if "SLURM_JOB_ID" in os.environ or "LOCAL_RANK" in os.environ:
        return
    try:
        import submitit
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        return
    try:
        job_env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return
    if job_env.num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        os.environ.setdefault("NODE_RANK", str(job_env.node))
