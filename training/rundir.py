"""The run directory: a run's configuration, progress, checkpoints and results on disk.

    run_dir/
      config.json          the full configuration (`RunConfig.to_json()`)
      metrics.csv          one row per epoch: loss, accuracy on every task, diagnostics
      summary.json         accuracy matrix, average accuracy, BWT, forgetting, wall time
      commands.txt         the command lines that ran it (`python -m training`)
      plots/               figures
      tensorboard/         diagnostics scalars and histograms
      run.lock             held by the process writing the run (its pid, host, start)
      checkpoint/
        epoch-N.*          weights + optimizer state after epoch N (the last two kept)
        epoch-N.progress.json, epoch-N.bn_states.npz
                           the progress of epoch N, kept with its checkpoint
        progress.json      the last epoch's: completed epochs, metric rows, wall time,
        bn_states.npz      the checkpoint, the BatchNorm state saved at each task's end

Every path stored in the directory is relative to it, so a run directory that is moved
or copied resumes from its own files. Files are replaced atomically: an interruption at
any moment leaves the last completed epoch readable. A damaged last checkpoint is
skipped for the one before it, with the progress saved beside it (`resume_point`). One
process at a time writes a run directory (`lock`).

!!! example
    ```python
    from training.rundir import RunDirectory

    directory = RunDirectory("runs/pmnist")
    with directory.lock():                  # RunDirectoryError if another run holds it
        progress, damaged = directory.resume_point()  # None before the first epoch
        print(progress.completed_epochs, directory.checkpoint_path(progress))
    ```
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import shutil
import socket
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from training.config import RunConfig

__all__ = [
    "NOT_RECORDED",
    "Progress",
    "RunDirectory",
    "RunDirectoryError",
    "summed_machine_seconds",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
COMMANDS_FILE = "commands.txt"
CHECKPOINT_DIR = "checkpoint"
PROGRESS_FILE = "progress.json"
BN_STATES_FILE = "bn_states.npz"
LOCK_FILE = "run.lock"
# `Progress.machine_seconds`' name for training time no machine was recorded for.
NOT_RECORDED = "not recorded"
# What reading damaged progress files raises.
_DAMAGED = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


class RunDirectoryError(ValueError):
    """The run directory holds another run, is in use, or is damaged."""


def _describe_holder(text: str) -> str:
    """`"pid 12 on host since 2024-01-01 10:00:00"` from a lock file's contents."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']} since {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "another process"  # it has the lock but has not written it yet


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
        machines: the training seconds spent on each machine, by its
            `zoo.precision.cpu_description` (a run may resume on another machine).
            Run directories from before this record hold none: `machine_seconds`
            names their seconds "not recorded".
    """

    completed_epochs: int = 0
    rows: list[dict] = field(default_factory=list)
    bn_states: dict[int, list[np.ndarray]] = field(default_factory=dict)
    checkpoint: str | None = None
    wall_time: float = 0.0
    machines: dict[str, float] = field(default_factory=dict)

    def add_training_time(self, seconds: float, machine: str) -> None:
        """Adds `seconds` of training on `machine` to `wall_time` and `machines`."""
        self.wall_time += seconds
        self.machines[machine] = self.machines.get(machine, 0.0) + seconds

    def machine_seconds(self) -> dict[str, float]:
        """Returns `machines`, rounded to 0.1 s, with the seconds of `wall_time` they
        do not account for (at least 1 s, from epochs trained before machines were
        recorded) under "not recorded"."""
        seconds = {name: round(s, 1) for name, s in self.machines.items()}
        missing = self.wall_time - sum(self.machines.values())
        if missing >= 1.0:
            seconds[NOT_RECORDED] = round(missing, 1)
        return seconds


def summed_machine_seconds(records: Iterable[Mapping]) -> dict[str, float]:
    """Returns the training seconds of several runs summed by machine.

    # Arguments
        records: summaries of runs (`summary.json`), or records holding their
            `wall_time_s` and `machines` (`Progress.machine_seconds`); one without
            `machines` (written before they were recorded) counts as "not recorded".

    # Returns
        Seconds by machine, rounded to 0.1 s.
    """
    total: dict[str, float] = {}
    for record in records:
        machines = record.get("machines", {NOT_RECORDED: record["wall_time_s"]})
        for name, seconds in machines.items():
            total[name] = round(total.get(name, 0.0) + seconds, 1)
    return total


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
        self.lock_path = self.path / LOCK_FILE
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
            overwrite: delete what an existing directory holds first (but its lock)
                instead of resuming it.

        # Returns
            The `RunDirectory`.

        # Raises
            RunDirectoryError: if the directory holds a run of another configuration
                with a completed epoch (`check_config`).
        """
        directory = cls(config.run_dir)
        if overwrite:
            directory._clear()
        else:
            directory.check_config(config)
        directory.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        directory.plots_dir.mkdir(exist_ok=True)
        tmp = directory.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config.to_json(), indent=2))
        os.replace(tmp, directory.config_path)
        return directory

    def check_config(self, config: RunConfig) -> None:
        """Checks that `config` may resume this directory: it holds no run, a run of the
        same configuration (`RunConfig.identity`), or one that completed no epoch (a
        run that failed before training: its configuration is replaced).

        # Raises
            RunDirectoryError: if the directory holds a completed epoch of a run of
                another configuration (the message names the fields that differ).
        """
        if not self.config_path.exists() or not self._has_progress():
            return
        previous = RunConfig.saved_identity(self._read_json(CONFIG_FILE))
        current = config.identity()
        if previous != current:
            changed = sorted(
                k for k in previous.keys() | current.keys()
                if previous.get(k) != current.get(k)
            )  # fmt: skip
            raise RunDirectoryError(
                f"{self.path} holds a run with another configuration (differs in "
                f"{changed}); choose another run directory or pass overwrite=True "
                f"(--overwrite)."
            )

    def _has_progress(self) -> bool:
        return self._progress_path.exists() or any(
            self.checkpoint_dir.glob(f"epoch-*.{PROGRESS_FILE}")
        )

    def _clear(self) -> None:
        """Deletes everything in the directory but its lock file (which a process
        waiting for the lock may hold open)."""
        if not self.path.exists():
            return
        for entry in self.path.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the run directory for the block: one writer per run directory.

        An exclusive OS lock (`fcntl.flock`) on `run.lock`, which names the holder (pid,
        host, start time). The operating system releases it when the process ends,
        however it ends (`kill -9` included). Creates the directory if needed.

        # Raises
            RunDirectoryError: if another process holds it (the message names it).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = _describe_holder(handle.read())
            handle.close()
            raise RunDirectoryError(
                f"{self.path} is in use by {holder}; wait for it to end or choose "
                f"another run directory."
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    }
                )
                + "\n"
            )
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def holder(self) -> str | None:
        """Who is writing the run now, read from `run.lock` without taking the lock:
        `"pid 12 on host since ..."`, or `None` if nobody (a lock left by a process
        of this host that no longer exists counts as nobody)."""
        try:
            text = self.lock_path.read_text().strip()
        except OSError:
            return None
        if not text:
            return None
        try:
            holder = json.loads(text)
            pid, host = int(holder["pid"]), holder["host"]
        except (ValueError, KeyError, TypeError):
            return _describe_holder(text)
        if host == socket.gethostname():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass  # alive, another user's
        return _describe_holder(text)

    def last_epoch_seconds(self) -> float | None:
        """The training seconds of the last saved epoch: the difference of the wall
        times the last two saved epochs recorded, so the time between a stop and its
        resume does not count; `None` with fewer than two readable."""
        saved = sorted(
            (epoch, path)
            for path in self.checkpoint_dir.glob(f"epoch-*.{PROGRESS_FILE}")
            if (epoch := _epoch_of(path)) is not None
        )
        try:
            times = [
                float(json.loads(path.read_text())["wall_time"])
                for _, path in saved[-2:]
            ]
        except _DAMAGED:
            return None
        return times[1] - times[0] if len(times) == 2 else None

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
            return _read_progress(self._progress_path, self._bn_path)
        except _DAMAGED as error:
            raise RunDirectoryError(
                f"cannot resume from {self.path}: damaged progress files ({error}); "
                f"use a new run directory."
            ) from None

    def save_progress(self, progress: Progress) -> None:
        """Writes `progress` as the last epoch's (BatchNorm states first, then
        `progress.json`)."""
        _write_progress(_encode_progress(progress), self._progress_path, self._bn_path)

    def save_epoch(self, checkpoint: tf.train.Checkpoint, progress: Progress) -> None:
        """Records a completed epoch: writes `checkpoint` as
        `checkpoint/epoch-<progress.completed_epochs>`, then `progress` pointing at it
        (beside the checkpoint, then as the last epoch's: the same bytes, encoded
        once), removes older checkpoints but the one before, and rewrites
        `metrics.csv`."""
        name = f"epoch-{progress.completed_epochs}"
        checkpoint.write(str(self.checkpoint_dir / name))
        progress.checkpoint = f"{CHECKPOINT_DIR}/{name}"
        encoded = _encode_progress(progress)
        _write_progress(encoded, *self._epoch_progress_paths(name))
        _write_progress(encoded, self._progress_path, self._bn_path)
        self._remove_old_checkpoints(keep=progress.completed_epochs)
        self.write_metrics(progress.rows)

    def _epoch_progress_paths(self, name: str) -> tuple[Path, Path]:
        """The progress files kept beside checkpoint `name` (`epoch-N`)."""
        return (
            self.checkpoint_dir / f"{name}.{PROGRESS_FILE}",
            self.checkpoint_dir / f"{name}.{BN_STATES_FILE}",
        )

    def checkpoint_path(self, progress: Progress) -> str:
        """The path of `progress`'s checkpoint, as `tf.train.Checkpoint.read` takes it.

        # Raises
            ValueError: if `progress` has no checkpoint.
        """
        if not progress.checkpoint:
            raise ValueError(f"{self.path} holds no completed epoch to load.")
        return str(self.path / progress.checkpoint)

    def checkpoint_problem(self, progress: Progress) -> str | None:
        """What is wrong with `progress`'s checkpoint, or `None` if every tensor of it
        reads back (TensorFlow checks each tensor's checksum): a missing file, a
        truncated or garbled index or data file."""
        try:
            reader = tf.train.load_checkpoint(self.checkpoint_path(progress))
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)
        except (tf.errors.OpError, ValueError, IndexError, OSError) as error:
            message = getattr(error, "message", None) or str(error)
            return (message.strip().splitlines() or [type(error).__name__])[0]
        return None

    def saved_epochs(self) -> Iterator[tuple[Progress | None, str]]:
        """The saved epochs, newest first: the last one (`progress.json`), then each
        older checkpoint with the progress kept beside it.

        # Returns
            `(progress, name)` pairs; `progress` is `None` where its progress files are
            damaged.
        """
        latest = None
        if self._progress_path.exists():
            try:
                latest = _read_progress(self._progress_path, self._bn_path)
                yield latest, latest.checkpoint or PROGRESS_FILE
            except _DAMAGED:
                yield None, f"{CHECKPOINT_DIR}/{PROGRESS_FILE}"
        epochs = sorted(
            {_epoch_of(path) for path in self.checkpoint_dir.glob("epoch-*")} - {None},
            reverse=True,
        )
        for epoch in epochs:
            if latest is not None and epoch >= latest.completed_epochs:
                continue
            name = f"epoch-{epoch}"
            progress_path, bn_path = self._epoch_progress_paths(name)
            if not progress_path.exists():
                continue  # a run directory from before progress was kept per epoch
            try:
                yield _read_progress(progress_path, bn_path), f"{CHECKPOINT_DIR}/{name}"
            except _DAMAGED:
                yield None, f"{CHECKPOINT_DIR}/{name}"

    def resume_point(self) -> tuple[Progress | None, list[str]]:
        """The newest saved epoch whose checkpoint and progress are intact.

        # Returns
            `(progress, damaged)`: the progress to resume from (`None` if no epoch has
            ended), and a description of each newer epoch skipped because its files
            are damaged (e.g. `"checkpoint/epoch-4 (file is too short to be an
            sstable)"`).

        # Raises
            RunDirectoryError: if epochs were saved but none of them is intact.
        """
        damaged = []
        for progress, name in self.saved_epochs():
            problem = (
                "damaged progress files"
                if progress is None
                else self.checkpoint_problem(progress)
            )
            if problem is None:
                return progress, damaged
            damaged.append(f"{name} ({problem})")
        if damaged:
            raise RunDirectoryError(
                f"cannot resume from {self.path}: no intact checkpoint: "
                f"{'; '.join(damaged)}; use a new run directory or pass overwrite=True "
                f"(--overwrite)."
            )
        return None, damaged

    def last_checkpoint(self) -> tuple[str, Progress]:
        """The checkpoint of the last completed epoch, and the progress.

        # Raises
            ValueError: if no epoch has been completed (`RunDirectoryError` if the
                progress files or the checkpoint are damaged).
        """
        progress = self.load_progress()
        if progress is None or not progress.checkpoint:
            raise ValueError(f"{self.path} holds no completed epoch to load.")
        problem = self.checkpoint_problem(progress)
        if problem is not None:
            raise RunDirectoryError(
                f"the last checkpoint of {self.path}, {progress.checkpoint}, is "
                f"damaged ({problem}); resume the run (run its command again) to "
                f"recompute it."
            )
        return self.checkpoint_path(progress), progress

    def _remove_old_checkpoints(self, keep: int) -> None:
        """Removes the checkpoints (and their progress) of epochs before `keep - 1`."""
        for path in self.checkpoint_dir.glob("epoch-*"):
            epoch = _epoch_of(path)
            if epoch is not None and epoch < keep - 1:
                path.unlink(missing_ok=True)

    # Results.

    def write_metrics(self, rows: list[dict]) -> None:
        """Writes `metrics.csv`: one line per row, the union of their columns in order
        of appearance (missing values empty)."""
        columns = list(dict.fromkeys(k for row in rows for k in row))
        tmp = self.metrics_path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            # What `csv.DictWriter(f, columns)` writes, without its per-row checks,
            # which take most of the time of a long run's file.
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows([[row.get(c, "") for c in columns] for row in rows])
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


def _epoch_of(path: Path) -> int | None:
    """N for the files of checkpoint `epoch-N` (`epoch-N.index`, ...), else `None`."""
    stem = path.name.split(".")[0]
    number = stem.removeprefix("epoch-")
    return int(number) if stem.startswith("epoch-") and number.isdigit() else None


def _read_progress(progress_path: Path, bn_path: Path) -> Progress:
    """The progress those files hold (raises one of `_DAMAGED` if they are damaged)."""
    saved = json.loads(progress_path.read_text())
    count = saved["bn_arrays"]
    bn_states = {}
    if saved["bn_tasks"]:
        with np.load(bn_path) as states:
            bn_states = {
                task: [states[f"t{task}_{i}"] for i in range(count)]
                for task in saved["bn_tasks"]
            }
    return Progress(
        completed_epochs=saved["completed_epochs"],
        rows=saved["rows"],
        bn_states=bn_states,
        # Older run directories stored the path they were written to: only its name
        # is used, inside this directory.
        checkpoint=(
            f"{CHECKPOINT_DIR}/{Path(saved['checkpoint']).name}"
            if saved["checkpoint"]
            else None
        ),
        wall_time=saved["wall_time"],
        machines=saved.get("machines", {}),
    )


def _encode_progress(progress: Progress) -> tuple[bytes, str]:
    """The contents of the files of `progress`: its BatchNorm states (`.npz`) and its
    JSON."""
    states = progress.bn_states
    count = len(next(iter(states.values()))) if states else 0
    arrays = {f"t{t}_{i}": a for t, s in states.items() for i, a in enumerate(s)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    saved = {
        "completed_epochs": progress.completed_epochs,
        "rows": progress.rows,
        "checkpoint": progress.checkpoint,
        "wall_time": progress.wall_time,
        "machines": progress.machines,
        "bn_tasks": sorted(states),
        "bn_arrays": count,
    }
    return buffer.getvalue(), json.dumps(saved)


def _write_progress(
    encoded: tuple[bytes, str], progress_path: Path, bn_path: Path
) -> None:
    """Writes encoded progress (`_encode_progress`): its BatchNorm states, then its
    JSON, each atomically."""
    bn_states, text = encoded
    tmp = bn_path.with_suffix(".tmp.npz")
    tmp.write_bytes(bn_states)
    os.replace(tmp, bn_path)
    tmp = progress_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, progress_path)
