"""nslm: word-level LSTM language models with negative-sampling losses (Lightning + Hydra)."""

from nslm.utils.paths import register_resolvers

__version__ = "0.1.0"

register_resolvers()
