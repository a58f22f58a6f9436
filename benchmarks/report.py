"""Where benchmarks write their results: one JSON file per run, with what produced it.

```python
from benchmarks.report import write_results

write_results("throughput", {"pairs": 12, "results": results}, output=args.output)
# -> benchmarks/results/throughput-20261202T121629Z.json with date, command, versions
```
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tensorflow as tf

__all__ = ["RESULTS_DIR", "write_results"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_results(
    kind: str, fields: dict[str, Any], *, output: Path | None = None
) -> Path:
    """Writes `fields` as `benchmarks/results/<kind>-<UTC stamp>.json` (or `output`).

    # Arguments
        kind: the benchmark's name, the file name's prefix.
        fields: what the benchmark measured (JSON-ready).
        output: a path to write instead of the results directory.

    # Returns
        The path written; its JSON also holds `date`, `tensorflow`, `machine`, `cpus`
        and `command` (the benchmark's `sys.argv`), before `fields`.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = Path(output) if output else RESULTS_DIR / f"{kind}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "date": stamp,
        "tensorflow": tf.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "command": sys.argv,
        **fields,
    }
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")
    return path
