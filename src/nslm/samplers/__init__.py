"""Negative samplers: each draws candidate ids and reports their expected counts (see `base`)."""

from nslm.samplers.base import Candidates, CandidateSampler
from nslm.samplers.in_batch import InBatchSampler
from nslm.samplers.kernel import QuadraticKernelSampler
from nslm.samplers.log_uniform import LogUniformSampler
from nslm.samplers.mixed import MixedSampler
from nslm.samplers.uniform import UniformSampler
from nslm.samplers.unigram import UnigramSampler

__all__ = [
    "CandidateSampler",
    "Candidates",
    "InBatchSampler",
    "LogUniformSampler",
    "MixedSampler",
    "QuadraticKernelSampler",
    "UniformSampler",
    "UnigramSampler",
]
