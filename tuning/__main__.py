"""`python -m tuning search ...`: see `tuning.cli`."""

import os
import sys

# Before TensorFlow is imported: the command reports errors itself, in one line
# (TF_CPP_MIN_LOG_LEVEL=0 shows TensorFlow's log lines; see `training.cli.quiet_logs`).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tuning.cli import main  # noqa: E402

sys.exit(main())
