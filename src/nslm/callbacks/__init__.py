from nslm.callbacks.throughput import TokenThroughput

__all__ = ["TokenThroughput"]
