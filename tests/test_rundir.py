"""Tests for training/rundir.py: progress round trips exactly, only relative paths are
stored, a copied run directory resumes from its own files, one process holds a run
directory, and each checkpoint keeps its progress for a fallback."""

import csv
import json
import os
import shutil
import socket

import numpy as np
import pytest
import tensorflow as tf

from training.config import RunConfig
from training.rundir import NOT_RECORDED, Progress, RunDirectory, RunDirectoryError
from training.runner import run


def config_in(path, **overrides):
    return RunConfig(run_dir=str(path), hidden_units=(8,), **overrides)


def test_progress_round_trip_stores_relative_paths(tmp_path):
    directory = RunDirectory.prepare(config_in(tmp_path / "run"))
    assert directory.load_progress() is None
    rng = np.random.default_rng(0)
    states = {
        t: [rng.normal(size=3).astype("float32") for _ in range(4)] for t in (0, 1)
    }
    progress = Progress(
        completed_epochs=2,
        rows=[{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "acc/a": 0.9}],
        bn_states=states,
    )
    progress.add_training_time(4.0, "CPU A, 2 CPUs, AVX2")
    progress.add_training_time(8.5, "CPU B, 2 CPUs, AMX")
    variable = tf.Variable([1.0, 2.0])
    directory.save_epoch(tf.train.Checkpoint(v=variable), progress)
    assert progress.checkpoint == "checkpoint/epoch-2"
    saved = json.loads((tmp_path / "run" / "checkpoint" / "progress.json").read_text())
    assert saved["checkpoint"] == "checkpoint/epoch-2"  # relative to the run directory
    assert str(tmp_path) not in json.dumps(saved)

    loaded = directory.load_progress()
    assert (loaded.completed_epochs, loaded.rows, loaded.wall_time) == (
        2, progress.rows, 12.5
    )  # fmt: skip
    assert loaded.machine_seconds() == {
        "CPU A, 2 CPUs, AVX2": 4.0,
        "CPU B, 2 CPUs, AMX": 8.5,
    }
    assert sorted(loaded.bn_states) == [0, 1]
    for task in states:
        for a, b in zip(states[task], loaded.bn_states[task]):
            np.testing.assert_array_equal(a, b)
    checkpoint, _ = directory.last_checkpoint()
    assert checkpoint == str(tmp_path / "run" / "checkpoint" / "epoch-2")
    restored = tf.Variable([0.0, 0.0])
    tf.train.Checkpoint(v=restored).read(checkpoint).assert_consumed()
    np.testing.assert_array_equal(restored.numpy(), [1.0, 2.0])
    with open(directory.metrics_path) as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {"epoch": "1", "loss": "0.5", "acc/a": ""}
    assert rows[1]["acc/a"] == "0.9"


def test_training_time_from_before_machines_were_recorded_is_named_so():
    # A run directory written before progress recorded machines resumes elsewhere.
    progress = Progress(completed_epochs=2, wall_time=100.0)
    assert progress.machine_seconds() == {NOT_RECORDED: 100.0}
    progress.add_training_time(30.0, "CPU B, 2 CPUs, AMX")
    assert progress.wall_time == 130.0
    assert progress.machine_seconds() == {
        "CPU B, 2 CPUs, AMX": 30.0,
        NOT_RECORDED: 100.0,
    }
    assert Progress(wall_time=0.4).machine_seconds() == {}  # under 1 s: rounding


def test_old_absolute_checkpoint_paths_are_read_inside_the_directory(tmp_path):
    directory = RunDirectory.prepare(config_in(tmp_path / "run"))
    directory.save_epoch(tf.train.Checkpoint(v=tf.Variable(1.0)), Progress(1))
    path = directory.checkpoint_dir / "progress.json"
    saved = json.loads(path.read_text())
    saved["checkpoint"] = "/somewhere/else/run/checkpoint/epoch-1"  # as written before
    path.write_text(json.dumps(saved))
    assert directory.load_progress().checkpoint == "checkpoint/epoch-1"
    assert directory.last_checkpoint()[0] == str(directory.checkpoint_dir / "epoch-1")


def test_only_the_last_two_checkpoints_are_kept(tmp_path):
    directory = RunDirectory.prepare(config_in(tmp_path / "run"))
    progress = Progress()
    for epoch in range(1, 13):
        progress.completed_epochs = epoch
        directory.save_epoch(tf.train.Checkpoint(v=tf.Variable(float(epoch))), progress)
    kept = sorted(p.name for p in directory.checkpoint_dir.glob("epoch-*.index"))
    assert kept == ["epoch-11.index", "epoch-12.index"]


def test_prepare_refuses_another_configuration(tmp_path):
    config = config_in(tmp_path / "run", meta=1.0)
    directory = RunDirectory.prepare(config)
    assert json.loads(directory.config_path.read_text()) == config.to_json()
    assert (directory.plots_dir.is_dir(), directory.checkpoint_dir.is_dir()) == (
        True, True
    )  # fmt: skip
    # Another location of the same run: reopened.
    RunDirectory.prepare(RunConfig(**{**config.to_json(), "data_dir": "/data"}))
    # Before an epoch completes (a run that failed before training), another
    # configuration replaces it; after, it is refused.
    replaced = config_in(tmp_path / "run", meta=1.5)
    RunDirectory.prepare(replaced)
    assert directory.read_config() == replaced
    directory.save_epoch(tf.train.Checkpoint(v=tf.Variable(1.0)), Progress(1))
    other = config_in(tmp_path / "run", meta=2.0, epochs=3)
    with pytest.raises(RunDirectoryError, match=r"differs in \['epochs', 'meta'\]"):
        RunDirectory.prepare(other)
    with directory.lock():
        (directory.path / "stale.txt").write_text("")
        RunDirectory.prepare(other, overwrite=True)
        assert not (directory.path / "stale.txt").exists()
        assert directory.lock_path.exists()  # the lock it holds stays
    assert directory.read_config() == other
    assert directory.load_progress() is None


def test_files_of_a_run(tmp_path):
    directory = RunDirectory(tmp_path / "run")
    with pytest.raises(ValueError, match="has no config.json: not a run directory"):
        directory.read_config()
    with pytest.raises(ValueError, match="has no summary.json: finish the run"):
        directory.read_summary()
    assert directory.last_command() is None
    directory.path.mkdir()
    directory.record_command("python -m training permuted")
    directory.record_command("python -m training permuted --epochs 2\n")
    assert directory.last_command() == "python -m training permuted --epochs 2"
    directory.write_summary({"mean_accuracy": 0.5})
    assert directory.read_summary() == {"mean_accuracy": 0.5}
    (directory.checkpoint_dir).mkdir()
    (directory.checkpoint_dir / "progress.json").write_text("{not json")
    with pytest.raises(RunDirectoryError, match="damaged progress files"):
        directory.load_progress()


def checkpoint_values(run_dir) -> dict:
    reader = tf.train.load_checkpoint(RunDirectory(run_dir).last_checkpoint()[0])
    names = reader.get_variable_to_shape_map()
    # The object graph names a restored optimizer's slots without its name scope.
    skipped = ("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH")
    return {n: reader.get_tensor(n) for n in names if not n.startswith(skipped)}


def test_a_copied_run_directory_resumes_from_its_own_files(tmp_path, tiny_data_dir):
    def tiny(run_dir):
        return RunConfig(
            protocol="permuted", num_tasks=2, epochs=2, hidden_units=(16,),
            batch_size=40, learning_rate=0.01, data_dir=str(tiny_data_dir),
            run_dir=str(run_dir),
        )  # fmt: skip

    run(tiny(tmp_path / "whole"), verbose=0)
    original, copy = tmp_path / "original", tmp_path / "copy"
    run(tiny(original), verbose=0, stop_after_epochs=3)
    shutil.copytree(original, copy)
    for path in (original / "checkpoint").glob("epoch-*"):  # corrupt the original
        path.write_bytes(b"\0" * 16)
    summary = run(tiny(copy), verbose=0)
    assert summary["epochs"] == 4 and summary["run_dir"] == str(copy)
    whole, resumed = checkpoint_values(tmp_path / "whole"), checkpoint_values(copy)
    assert whole.keys() == resumed.keys() and len(whole) > 5
    for name in whole:
        np.testing.assert_array_equal(whole[name], resumed[name], err_msg=name)
    assert (tmp_path / "whole" / "metrics.csv").read_text() == (
        copy / "metrics.csv"
    ).read_text()


def test_one_process_holds_the_lock_and_the_file_names_it(tmp_path):
    directory = RunDirectory(tmp_path / "new" / "run")
    with directory.lock():
        holder = json.loads(directory.lock_path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        # A second open file description is refused, as another process would be.
        with pytest.raises(RunDirectoryError) as info:
            with RunDirectory(directory.path).lock():
                pass
        message = str(info.value)
        assert message == (
            f"{directory.path} is in use by pid {os.getpid()} on "
            f"{socket.gethostname()} since {holder['started']}; wait for it to end or "
            "choose another run directory."
        )
    assert directory.lock_path.read_text() == ""  # released
    with directory.lock():
        pass


def test_each_checkpoint_keeps_its_progress_for_a_fallback(tmp_path):
    directory = RunDirectory.prepare(config_in(tmp_path / "run"))
    assert directory.resume_point() == (None, [])
    state = [np.arange(3, dtype="float32")]
    for epoch in (1, 2, 3):
        progress = Progress(
            completed_epochs=epoch,
            rows=[{"epoch": e} for e in range(1, epoch + 1)],
            bn_states={0: state} if epoch >= 2 else {},  # task 0 ended at epoch 2
            wall_time=float(epoch),
        )
        directory.save_epoch(tf.train.Checkpoint(v=tf.Variable(float(epoch))), progress)
    names = sorted(p.name for p in directory.checkpoint_dir.iterdir())
    assert names == [
        "bn_states.npz", "epoch-2.bn_states.npz", "epoch-2.data-00000-of-00001",
        "epoch-2.index", "epoch-2.progress.json", "epoch-3.bn_states.npz",
        "epoch-3.data-00000-of-00001", "epoch-3.index", "epoch-3.progress.json",
        "progress.json",
    ]  # fmt: skip
    progress, damaged = directory.resume_point()
    assert (progress.completed_epochs, damaged) == (3, [])

    (directory.checkpoint_dir / "epoch-3.index").write_bytes(b"\0" * 8)
    progress, damaged = directory.resume_point()
    assert (progress.completed_epochs, progress.checkpoint) == (2, "checkpoint/epoch-2")
    assert progress.rows == [{"epoch": 1}, {"epoch": 2}] and progress.wall_time == 2.0
    np.testing.assert_array_equal(progress.bn_states[0][0], state[0])
    assert damaged == ["checkpoint/epoch-3 (file is too short to be an sstable)"]
    with pytest.raises(RunDirectoryError, match=r"checkpoint/epoch-3, is damaged"):
        directory.last_checkpoint()

    # Damaged progress files fall back the same way.
    (directory.checkpoint_dir / "progress.json").write_text("{")
    progress, damaged = directory.resume_point()
    assert progress.completed_epochs == 2
    assert damaged == [
        "checkpoint/progress.json (damaged progress files)",
        "checkpoint/epoch-3 (file is too short to be an sstable)",
    ]
    (directory.checkpoint_dir / "epoch-2.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(RunDirectoryError, match="no intact checkpoint") as info:
        directory.resume_point()
    assert "\n" not in str(info.value)


def test_metrics_csv_is_what_csv_dictwriter_writes(tmp_path):
    directory = RunDirectory.prepare(config_in(tmp_path / "run"))
    rows = [
        {"epoch": 1, "task": "a", "loss": 0.5},
        {"epoch": 2, "task": 'b, "quoted"', "loss": float("nan"), "acc/b": 0.25},
        {"epoch": 3, "acc/c": None, "loss": 1e-9},
    ]
    directory.write_metrics(rows)
    expected = tmp_path / "expected.csv"
    with expected.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "task", "loss", "acc/b", "acc/c"])
        writer.writeheader()
        writer.writerows(rows)
    assert directory.metrics_path.read_bytes() == expected.read_bytes()


def test_an_epochs_progress_files_are_the_last_ones(tmp_path):
    directory = RunDirectory.prepare(config_in(tmp_path / "run"))
    progress = Progress(
        completed_epochs=1,
        rows=[{"epoch": 1}],
        bn_states={0: [np.arange(3, dtype="float32")]},
    )
    directory.save_epoch(tf.train.Checkpoint(v=tf.Variable(1.0)), progress)
    folder = directory.checkpoint_dir
    assert (folder / "epoch-1.progress.json").read_bytes() == (
        folder / "progress.json"
    ).read_bytes()
    assert (folder / "epoch-1.bn_states.npz").read_bytes() == (
        folder / "bn_states.npz"
    ).read_bytes()
    assert not list(folder.glob("*.tmp*"))
