"""`SparseAwareDDPStrategy`: Lightning's DDP for models whose embedding tables get sparse gradients.

DDP's reducer all-reduces dense gradient buckets; a parameter that receives a sparse gradient (the output
embedding under a sampled loss, the input embedding with `sparse_embedding=true`) crashes it on gloo
("Cannot access storage of SparseTensorImpl") and could not work on NCCL at all (no sparse all-reduce).
This strategy, which `trainer=ddp`, `ddp_cpu` and `slurm` select:

- hands the module's sparse tables (`sparse_parameters()`) and the objective's buffers (sampler tables:
  constant, identical on every rank, V-sized) to DDP's ignore list, and broadcasts the tables from rank 0
  once at the start (DDP's initial broadcast skips ignored parameters);
- keeps DDP's bucketed all-reduce for every dense parameter;
- right after each backward (inside the optimizer closure, before `on_before_optimizer_step` and gradient
  clipping) averages the tables' gradients over ranks as (row ids, row values), see
  `nslm.distributed.collectives`. Clipping and the optimizer therefore see the synchronised gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nslm.distributed.collectives import average_gradients_across_ranks
from nslm.errors import ConfigError


@runtime_checkable
class HasSparseTables(Protocol):
    """A module that says which of its parameters get sparse gradients (nslm's LanguageModelModule)."""

    def sparse_parameters(self) -> list[nn.Parameter]: ...

    def constant_buffer_prefixes(self) -> tuple[str, ...]: ...


class SparseAwareDDPStrategy(DDPStrategy):
    strategy_name = "nslm_sparse_ddp"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tables: list[nn.Parameter] = []
        #: bytes this rank sent for the tables at the last step (benchmarks read it)
        self.last_sync_bytes = 0

    def _setup_model(self, model: nn.Module) -> DistributedDataParallel:
        self._tables = model.sparse_parameters() if isinstance(model, HasSparseTables) else []
        prefixes = model.constant_buffer_prefixes() if isinstance(model, HasSparseTables) else ()
        table_ids = {id(param) for param in self._tables}
        ignored = [name for name, param in model.named_parameters() if id(param) in table_ids]
        ignored += [name for name, _ in model.named_buffers() if name.startswith(prefixes)]
        if ignored:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
            for param in self._tables:  # what DDP's own start-up broadcast would have done for them
                dist.broadcast(param.data, src=0)
        return super()._setup_model(model)

    def optimizer_step(self, optimizer, closure: Callable[[], Any], model=None, **kwargs: Any) -> Any:
        def closure_then_average() -> Any:
            result = closure()  # forward + backward (DDP has all-reduced the dense gradients)
            self.last_sync_bytes = average_gradients_across_ranks(self._tables)
            return result

        return super().optimizer_step(optimizer, closure_then_average, model, **kwargs)


def check_strategy(trainer: pl.Trainer, module: nn.Module) -> None:
    """Sparse tables need this strategy across processes: Lightning's own would crash at the first backward
    (gloo) or could not work at all (NCCL has no sparse all-reduce). One line naming the fix."""
    launcher = getattr(trainer.strategy, "launcher", None)
    if type(launcher).__name__ == "_MultiProcessingLauncher":  # (one spawned device too: results stay there)
        # (ddp_spawn / ddp_fork / ddp_notebook: the module and its metrics come back to the main process
        # pickled after the fit, and the test run there logs metrics its logger never saw)
        raise ConfigError(
            f"trainer.strategy=ddp_{getattr(trainer.strategy, '_start_method', 'spawn')} (ranks started by "
            "multiprocessing) is not supported; use trainer=ddp (GPUs), trainer=ddp_cpu or trainer=slurm"
        )
    if trainer.world_size <= 1 or isinstance(trainer.strategy, SparseAwareDDPStrategy):
        return
    if isinstance(module, HasSparseTables) and module.sparse_parameters():
        raise ConfigError(
            f"trainer.strategy={type(trainer.strategy).__name__} cannot synchronise the sparse gradients of "
            "loss.sparse_gradients / model.net.sparse_embedding across processes; use trainer=ddp (GPUs), "
            "trainer=ddp_cpu or trainer=slurm, which select nslm's sparse-aware DDP"
        )
