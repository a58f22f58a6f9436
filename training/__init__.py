"""Training metaplastic BNNs: the optimizer, data, continual-learning protocols, metrics.

Importing the package registers `MetaplasticAdam` with Keras, so saved models compiled
with it load without `custom_objects`.
"""

import os
import sys

if "tensorflow" not in sys.modules:
    # Hide TensorFlow's start-up INFO lines (not warnings). Started as a command
    # (`python -m training ...`: `sys.argv[0]` is "-m" while the package is imported),
    # also its warnings and errors: the command reports errors itself, in one line.
    # Setting TF_CPP_MIN_LOG_LEVEL=0 shows everything.
    os.environ.setdefault(
        "TF_CPP_MIN_LOG_LEVEL", "3" if sys.argv[:1] == ["-m"] else "1"
    )

from training.optimizers import MetaplasticAdam, is_binary_variable  # noqa: E402

__all__ = ["MetaplasticAdam", "is_binary_variable"]
