"""The run directory: a run's configuration, progress, checkpoints and results on disk.

    run_dir/
      config.json          the full configuration (`RunConfig.to_json()`)
      metrics.csv          one row per epoch: loss, accuracy on every task, diagnostics
      summary.json         accuracy matrix, average accuracy, BWT, forgetting, wall time
      commands.txt         the command lines that ran it (`python -m training`)
      plots/               figures
      tensorboard/         diagnostics scalars and histograms
      checkpoint/
        epoch-N.*          weights + optimizer state after epoch N (the last two kept)
        progress.json      completed epochs, metric rows, wall time, the checkpoint
        bn_states.npz      the BatchNorm state saved at the end of each task

Every path stored in the directory is relative to it, so a run directory that is moved
or copied resumes from its own files. Files are replaced atomically: an interruption at
any moment leaves the last completed epoch readable.

!!! example
    ```python
    from training.rundir import RunDirectory

    directory = RunDirectory("runs/pmnist")
    progress = directory.load_progress()   # None before the first epoch ends
    print(progress.completed_epochs, directory.checkpoint_path(progress))
    ```
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from training.config import RunConfig

__all__ = ["Progress", "RunDirectory", "RunDirectoryError"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
COMMANDS_FILE = "commands.txt"
CHECKPOINT_DIR = "checkpoint"
PROGRESS_FILE = "progress.json"
BN_STATES_FILE = "bn_states.npz"


class RunDirectoryError(ValueError):
    """The run directory holds another run, or is damaged."""


@dataclass
class Progress:
    """What survives an interruption of a run.

    # Arguments
        completed_epochs: epochs of the whole run completed so far.
        rows: the metric rows of those epochs (`metrics.csv`).
        bn_states: the BatchNorm state saved at the end of each finished task, by
            task index (`training.batchnorm`).
        checkpoint: the last epoch's checkpoint, relative to the run directory
            (`checkpoint/epoch-N`), or `None` before the first epoch ends.
        wall_time: training seconds so far, over every invocation.
    """

    completed_epochs: int = 0
    rows: list[dict] = field(default_factory=list)
    bn_states: dict[int, list[np.ndarray]] = field(default_factory=dict)
    checkpoint: str | None = None
    wall_time: float = 0.0


class RunDirectory:
    """The files of one run directory.

    # Arguments
        path: the run directory (it need not exist yet).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config_path = self.path / CONFIG_FILE
        self.metrics_path = self.path / METRICS_FILE
        self.summary_path = self.path / SUMMARY_FILE
        self.commands_path = self.path / COMMANDS_FILE
        self.plots_dir = self.path / "plots"
        self.tensorboard_dir = self.path / "tensorboard"
        self.checkpoint_dir = self.path / CHECKPOINT_DIR
        self._progress_path = self.checkpoint_dir / PROGRESS_FILE
        self._bn_path = self.checkpoint_dir / BN_STATES_FILE

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @classmethod
    def prepare(cls, config: RunConfig, *, overwrite: bool = False) -> RunDirectory:
        """Creates (or reopens) `config.run_dir` for `config` and writes its
        `config.json`.

        # Arguments
            config: the run's configuration.
            overwrite: delete an existing directory first instead of resuming it.

        # Returns
            The `RunDirectory`.

        # Raises
            RunDirectoryError: if the directory holds a run of another configuration
                (the message names the fields that differ).
        """
        directory = cls(config.run_dir)
        if directory.config_path.exists() and not overwrite:
            previous = RunConfig.saved_identity(directory._read_json(CONFIG_FILE))
            current = config.identity()
            if previous != current:
                changed = sorted(
                    k for k in previous.keys() | current.keys()
                    if previous.get(k) != current.get(k)
                )  # fmt: skip
                raise RunDirectoryError(
                    f"{directory.path} holds a run with another configuration (differs "
                    f"in {changed}); choose another run directory or pass "
                    f"overwrite=True (--overwrite)."
                )
        elif overwrite and directory.path.exists():
            shutil.rmtree(directory.path)
        directory.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        directory.plots_dir.mkdir(exist_ok=True)
        directory.config_path.write_text(json.dumps(config.to_json(), indent=2))
        return directory

    def read_config(self) -> RunConfig:
        """The run's configuration, from `config.json`.

        # Raises
            ValueError: if there is no `config.json` (not a run directory).
        """
        if not self.config_path.exists():
            raise ValueError(f"{self.path} has no {CONFIG_FILE}: not a run directory.")
        return RunConfig.from_json(self._read_json(CONFIG_FILE))

    def _read_json(self, name: str) -> dict:
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, ValueError) as error:
            raise RunDirectoryError(
                f"cannot read {self.path / name}: {error}"
            ) from None

    # Progress and checkpoints.

    def load_progress(self) -> Progress | None:
        """The progress of the last completed epoch, or `None` if no epoch has ended.

        # Raises
            RunDirectoryError: if the progress files are damaged.
        """
        if not self._progress_path.exists():
            return None
        try:
            saved = json.loads(self._progress_path.read_text())
            states = np.load(self._bn_path) if self._bn_path.exists() else {}
            count = saved["bn_arrays"]
            return Progress(
                completed_epochs=saved["completed_epochs"],
                rows=saved["rows"],
                bn_states={
                    task: [states[f"t{task}_{i}"] for i in range(count)]
                    for task in saved["bn_tasks"]
                },
                # Older run directories stored the path they were written to: only
                # its name is used, inside this directory.
                checkpoint=(
                    f"{CHECKPOINT_DIR}/{Path(saved['checkpoint']).name}"
                    if saved["checkpoint"]
                    else None
                ),
                wall_time=saved["wall_time"],
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RunDirectoryError(
                f"cannot resume from {self.path}: damaged progress files ({error}); "
                f"use a new run directory."
            ) from None

    def save_progress(self, progress: Progress) -> None:
        """Writes `progress` (BatchNorm states first, then `progress.json`)."""
        states = progress.bn_states
        count = len(next(iter(states.values()))) if states else 0
        arrays = {f"t{t}_{i}": a for t, s in states.items() for i, a in enumerate(s)}
        tmp = self._bn_path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, self._bn_path)
        saved = {
            "completed_epochs": progress.completed_epochs,
            "rows": progress.rows,
            "checkpoint": progress.checkpoint,
            "wall_time": progress.wall_time,
            "bn_tasks": sorted(states),
            "bn_arrays": count,
        }
        tmp = self._progress_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved))
        os.replace(tmp, self._progress_path)

    def save_epoch(self, checkpoint: tf.train.Checkpoint, progress: Progress) -> None:
        """Records a completed epoch: writes `checkpoint` as
        `checkpoint/epoch-<progress.completed_epochs>`, then `progress` pointing at it,
        removes older checkpoints but the one before, and rewrites `metrics.csv`."""
        name = f"epoch-{progress.completed_epochs}"
        checkpoint.write(str(self.checkpoint_dir / name))
        progress.checkpoint = f"{CHECKPOINT_DIR}/{name}"
        self.save_progress(progress)
        self._remove_old_checkpoints(keep=progress.completed_epochs)
        self.write_metrics(progress.rows)

    def checkpoint_path(self, progress: Progress) -> str:
        """The path of `progress`'s checkpoint, as `tf.train.Checkpoint.read` takes it.

        # Raises
            ValueError: if `progress` has no checkpoint.
        """
        if not progress.checkpoint:
            raise ValueError(f"{self.path} holds no completed epoch to load.")
        return str(self.path / progress.checkpoint)

    def last_checkpoint(self) -> tuple[str, Progress]:
        """The checkpoint of the last completed epoch, and the progress.

        # Raises
            ValueError: if no epoch has been completed (`RunDirectoryError` if the
                progress files are damaged).
        """
        progress = self.load_progress()
        if progress is None or not progress.checkpoint:
            raise ValueError(f"{self.path} holds no completed epoch to load.")
        return self.checkpoint_path(progress), progress

    def _remove_old_checkpoints(self, keep: int) -> None:
        """Removes the checkpoints of epochs before `keep - 1`."""
        for index in self.checkpoint_dir.glob("epoch-*.index"):
            epoch = int(index.name.split(".")[0].split("-")[1])
            if epoch < keep - 1:
                for path in self.checkpoint_dir.glob(f"epoch-{epoch}.*"):
                    path.unlink(missing_ok=True)

    # Results.

    def write_metrics(self, rows: list[dict]) -> None:
        """Writes `metrics.csv`: one line per row, the union of their columns in order
        of appearance (missing values empty)."""
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        tmp = self.metrics_path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_path)

    def write_summary(self, summary: dict) -> None:
        """Writes `summary.json`."""
        self.summary_path.write_text(json.dumps(summary, indent=2))

    def read_summary(self) -> dict:
        """The run's summary.

        # Raises
            ValueError: if there is no `summary.json` (the run is unfinished).
        """
        if not self.summary_path.exists():
            raise ValueError(
                f"{self.path} has no {SUMMARY_FILE}: finish the run (re-run its "
                "command) first"
            )
        return self._read_json(SUMMARY_FILE)

    def record_command(self, command: str) -> None:
        """Appends a command line that ran this directory to `commands.txt`."""
        with self.commands_path.open("a") as f:
            f.write(command.rstrip("\n") + "\n")

    def last_command(self) -> str | None:
        """The last command recorded in `commands.txt` (the one that completed the
        run), or `None`."""
        if not self.commands_path.exists():
            return None
        lines = [
            line for line in self.commands_path.read_text().splitlines() if line.strip()
        ]
        return lines[-1] if lines else None
