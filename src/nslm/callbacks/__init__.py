from nslm.callbacks.history import ValidationHistory
from nslm.callbacks.throughput import TokenThroughput

__all__ = ["TokenThroughput", "ValidationHistory"]
