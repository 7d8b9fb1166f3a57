"""Multi-process training: starting ranks (`launch`), exchanging ids and sparse gradients
(`collectives`), and the DDP strategy that keeps sparse tables out of DDP's dense reducer (`strategy`)."""

from nslm.distributed.collectives import average_gradients_across_ranks, gather_from_all_ranks, is_distributed
from nslm.distributed.launch import (
    export_submitit_rank_env,
    process_rank,
    run_ddp_children_on_job_config,
    share_with_ddp_children,
)

__all__ = [
    "average_gradients_across_ranks",
    "export_submitit_rank_env",
    "gather_from_all_ranks",
    "is_distributed",
    "process_rank",
    "run_ddp_children_on_job_config",
    "share_with_ddp_children",
]
