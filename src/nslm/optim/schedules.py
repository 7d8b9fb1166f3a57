"""Learning-rate schedules that torch does not ship as a one-liner."""

from __future__ import annotations


class DecayAfterEpoch:
    """lr factor for LambdaLR: 1 for the first `start_epoch` epochs, then multiplied by `gamma` each epoch.

    Zaremba et al. (2014): small decays x0.5 after epoch 4, medium x0.8 after 6, large /1.15 after 14.
    """

    def __init__(self, start_epoch: int, gamma: float) -> None:
        self.start_epoch = start_epoch
        self.gamma = gamma

    def __call__(self, epoch: int) -> float:
        return self.gamma ** max(0, epoch + 1 - self.start_epoch)
