"""Training metaplastic BNNs: the optimizer, data, continual-learning protocols, metrics."""

from training.optimizers import MetaplasticAdam, is_binary_variable

__all__ = ["MetaplasticAdam", "is_binary_variable"]
