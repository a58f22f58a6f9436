"""Where run directories stand: finished, running or stopped, how far, how fast.

Runs resume exactly, so a long one spans sessions: the processes of a session end with
it, and the next one starts by asking which runs stopped and restarting them (the same
command resumes each from its last completed epoch). `python -m training status` lists
every run directory under `runs/` (or the given ones) with its state, its epochs done
of those planned, its test accuracy (final, or of the task being learned), its training
time, the duration of its last epoch and, at that pace, the time left. Nothing is
locked or written: reading a running run is safe.

```bash
python -m training status                      # every run directory under runs/
python -m training status runs/paper/fig2      # those under a folder, or run directories
```

!!! example
    ```python
    from training.status import run_status

    status = run_status("runs/pmnist")
    print(status.state, status.completed_epochs, status.planned_epochs)
    ```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from training.config import RunConfig
from training.rundir import CONFIG_FILE, RunDirectory, RunDirectoryError

__all__ = [
    "RunStatus",
    "find_run_directories",
    "format_statuses",
    "planned_epochs",
    "run_status",
]


@dataclass(frozen=True)
class RunStatus:
    """Where one run directory stands.

    # Arguments
        path: the run directory.
        state: `"finished"` (it has `summary.json`), `"running"` (a live process
            holds its lock), `"stopped"` (epochs done, nobody running it), `"not
            started"` or `"damaged"` (its last progress files cannot be read: its
            command resumes from the newest intact epoch, `RunDirectory.resume_point`).
        completed_epochs: epochs completed, over every task.
        planned_epochs: epochs the whole run trains (`planned_epochs`).
        wall_time_s: training time so far, over every invocation (while a process
            was paused too).
        last_epoch_s: training time of the last completed epoch (a stop and its
            resume within it do not count), if two were saved.
        remaining_s: `last_epoch_s` times the epochs left, if known.
        holder: the process writing it (pid, host, start), when running.
        accuracy: a finished run's final mean test accuracy over its tasks; else the
            test accuracy of the task being learned at the last epoch that evaluated
            it (with the run's live BatchNorm state).
    """

    path: Path
    state: str
    completed_epochs: int
    planned_epochs: int
    wall_time_s: float
    last_epoch_s: float | None = None
    remaining_s: float | None = None
    holder: str | None = None
    accuracy: float | None = None


def _current_accuracy(rows: list[dict]) -> float | None:
    """The test accuracy of the task being learned, from the newest metric row that
    has it (`acc/<task>`)."""
    for row in reversed(rows):
        value = row.get(f"acc/{row.get('task')}")
        if value not in (None, ""):
            return float(value)
    return None


def planned_epochs(config: RunConfig) -> int:
    """The epochs a run of `config` trains: `config.epochs` for each training task
    (one task with `joint`; one per dataset for a sequence; `num_tasks` otherwise)."""
    if config.joint:
        tasks = 1
    elif config.protocol == "sequence":
        tasks = len(config.datasets)
    else:
        tasks = config.num_tasks
    return tasks * config.epochs


def run_status(path: str | os.PathLike) -> RunStatus:
    """Where the run directory `path` stands, read from its files.

    # Raises
        ValueError: if `path` is not a run directory, or its files are damaged.
    """
    directory = RunDirectory(path)
    config = directory.read_config()
    planned = planned_epochs(config)
    holder = directory.holder()
    if directory.summary_path.exists():
        summary = directory.read_summary()
        return RunStatus(
            directory.path,
            "finished",
            int(summary.get("epochs", planned)),
            planned,
            float(summary.get("wall_time_s", 0.0)),
            accuracy=summary.get("mean_accuracy"),
        )
    try:
        progress = directory.load_progress()
    except RunDirectoryError:  # resuming falls back on the newest intact epoch
        return RunStatus(directory.path, "damaged", 0, planned, 0.0, holder=holder)
    completed = 0 if progress is None else progress.completed_epochs
    last = directory.last_epoch_seconds()
    if holder is not None:
        state = "running"
    else:
        state = "stopped" if completed else "not started"
    return RunStatus(
        directory.path,
        state,
        completed,
        planned,
        0.0 if progress is None else progress.wall_time,
        last,
        None if last is None else last * max(planned - completed, 0),
        holder,
        None if progress is None else _current_accuracy(progress.rows),
    )


def find_run_directories(root: str | os.PathLike) -> list[Path]:
    """`root` if it is a run directory, else the run directories below it, sorted.

    # Raises
        ValueError: if `root` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise ValueError(f"{root} does not exist; pass a run directory or a folder")
    if (root / CONFIG_FILE).is_file():
        return [root]
    return sorted(
        config.parent
        for config in root.rglob(CONFIG_FILE)
        if not any(part == "checkpoint" for part in config.parent.parts)
    )


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_statuses(statuses: list[RunStatus]) -> str:
    """A markdown table of `statuses`, then how to resume the stopped ones."""
    lines = [
        "| run directory | state | epochs | test accuracy | training time | last "
        "epoch | left at that pace |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in statuses:
        state = s.state + (f" ({s.holder})" if s.holder else "")
        last = None if s.last_epoch_s is None else f"{s.last_epoch_s:.0f} s"
        left = "—" if s.state == "finished" else _hours(s.remaining_s)
        accuracy = "—" if s.accuracy is None else f"{100 * s.accuracy:.2f} %"
        if s.accuracy is not None:
            accuracy += " (mean, final)" if s.state == "finished" else " (current task)"
        lines.append(
            f"| {s.path} | {state} | {s.completed_epochs}/{s.planned_epochs} | "
            f"{accuracy} | {_hours(s.wall_time_s)} | {last or '—'} | {left} |"
        )
    stopped = [s for s in statuses if s.state in ("stopped", "damaged")]
    if stopped:
        lines += [
            "",
            f"{len(stopped)} stopped or damaged: run each one's command again to "
            "resume it from its last intact epoch.",
        ]
    return "\n".join(lines)
