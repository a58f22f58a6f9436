"""`python -m tuning search ...`: see `tuning.cli`."""

import sys

from tuning.cli import main

sys.exit(main())
