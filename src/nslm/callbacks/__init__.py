from nslm.callbacks.history import ValidationHistory
from nslm.callbacks.mid_epoch import MidEpochResume
from nslm.callbacks.throughput import TokenThroughput

__all__ = ["MidEpochResume", "TokenThroughput", "ValidationHistory"]
