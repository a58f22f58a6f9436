"""Training metaplastic BNNs: the optimizer, data, continual-learning protocols, metrics.

Importing the package registers `MetaplasticAdam` with Keras, so saved models compiled
with it load without `custom_objects`.
"""

import os
import sys

if (
    "tensorflow" not in sys.modules
):  # hide TensorFlow's start-up INFO lines (not warnings)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from training.optimizers import MetaplasticAdam, is_binary_variable  # noqa: E402

__all__ = ["MetaplasticAdam", "is_binary_variable"]
