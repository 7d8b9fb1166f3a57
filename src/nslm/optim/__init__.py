"""Optimisation: lr schedules, optimisers for the sparse-gradient tables, and clipping that handles both.

A sampled loss (and `model.net.sparse_embedding=true`) gives the output (input) embedding a sparse
gradient over the rows a step used. `build_optimizer` updates those tables lazily (only the rows in the
gradient) beside the user's optimiser for the dense parameters; see `nslm.optim.sparse`.
"""

from nslm.optim.clipping import clip_sparse_aware_
from nslm.optim.schedules import DecayAfterEpoch
from nslm.optim.sparse import CombinedOptimizer, LazySGD, build_optimizer

__all__ = ["CombinedOptimizer", "DecayAfterEpoch", "LazySGD", "build_optimizer", "clip_sparse_aware_"]
