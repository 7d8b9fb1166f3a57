from nslm.callbacks.finish_exact import FinishExact
from nslm.callbacks.history import ValidationHistory
from nslm.callbacks.mid_epoch import MidEpochResume
from nslm.callbacks.oracle import OracleRatio
from nslm.callbacks.preemption import Preempted, Preemption
from nslm.callbacks.throughput import TokenThroughput

__all__ = [
    "FinishExact",
    "MidEpochResume",
    "OracleRatio",
    "Preempted",
    "Preemption",
    "TokenThroughput",
    "ValidationHistory",
]
