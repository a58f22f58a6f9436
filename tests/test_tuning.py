"""Tests for tuning/ (hypermodel, search, CLI, distributed chief/workers) on tiny data."""

import ast
import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras_tuner
import numpy as np
import pytest

from training.runner import RunConfig, build_model, build_tasks, make_optimizer
from tuning.cli import main
from tuning.hypermodel import MetaplasticHyperModel
from tuning.search import (
    distributed_role,
    make_tuner,
    summarize_search,
    trial_config,
)
from zoo import registry
from zoo.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def tiny_base(data_dir, **overrides):
    values = dict(
        protocol="permuted",
        datasets=("mnist",),
        num_tasks=2,
        epochs=1,
        hidden_units=(16, 16),
        batch_size=40,
        data_dir=str(data_dir),
    )
    return RunConfig(**{**values, **overrides})


def tiny_hypermodel(**overrides):
    values = dict(input_shape=(8, 8, 1), num_classes=4, hidden_units=(16, 16))
    return MetaplasticHyperModel(**{**values, **overrides})


def test_hypermodel_builds_with_one_shared_meta():
    hypermodel = tiny_hypermodel(meta_range=(0.5, 2.0), meta_default=1.35)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert sorted(hp.values) == ["learning_rate", "meta"]
    assert hp.values["meta"] == 1.35
    assert hp.values["learning_rate"] == pytest.approx(1e-4)  # default: min
    assert model.optimizer.meta == pytest.approx(1.35)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)
    assert model.output_shape == (None, 4)
    lr = hp.get_config()["space"][0]["config"]
    assert lr["sampling"] == "log" and (lr["min_value"], lr["max_value"]) == (
        1e-4,
        1e-2,
    )


def test_fixed_learning_rate_tunes_m_alone():
    hypermodel = tiny_hypermodel(learning_rate=0.005)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    space = {h["config"]["name"]: h["class_name"] for h in hp.get_config()["space"]}
    assert space == {"learning_rate": "Fixed", "meta": "Float"}
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005)
    assert hypermodel.config_overrides(hp)["learning_rate"] == pytest.approx(0.005)
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="learning_rate"):
            tiny_hypermodel(learning_rate=bad)


def test_hypermodel_builds_with_one_meta_per_binary_layer():
    hypermodel = tiny_hypermodel(per_layer_meta=True, hidden_units_choices=(8, 32))
    hp = keras_tuner.HyperParameters()
    hp.Fixed("meta_dense_1", 0.5)
    hp.Fixed("meta_dense_2", 1.5)
    hp.Fixed("meta_dense_out", 2.5)
    hp.Fixed("hidden_units", 32)
    model = hypermodel.build(hp)
    assert model.optimizer.meta == {
        "dense_1": 0.5,
        "dense_2": 1.5,
        "dense_out": 2.5,
    }
    assert model.get_layer("dense_1").units == 32
    assert model.get_layer("dense_2").units == 32
    overrides = hypermodel.config_overrides(hp)
    assert overrides["meta"] == {"dense_1": 0.5, "dense_2": 1.5, "dense_out": 2.5}
    assert overrides["hidden_units"] == (32, 32)
    # A RunConfig takes the per-layer m as it is.
    assert RunConfig(**overrides).meta["dense_out"] == 2.5


def test_build_is_the_model_a_trial_starts_from(tmp_path, tiny_data_dir):
    hypermodel = tiny_hypermodel(learning_rate_range=(1e-3, 2e-2))
    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", 0.004)
    hp.Fixed("meta", 0.7)
    built = hypermodel.build(hp)
    config = trial_config(
        tiny_base(tiny_data_dir),
        hypermodel,
        hp,
        validation_split=0.1,
        run_dir=str(tmp_path),
    )
    # The runner builds the trial's model from the trial's config with the same seed.
    trial = build_model(config, input_shape=(8, 8, 1), num_classes=4)
    assert [w.shape for w in built.get_weights()] == [
        w.shape for w in trial.get_weights()
    ]
    for ours, theirs in zip(built.get_weights(), trial.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    assert built.optimizer.get_config() == make_optimizer(config).get_config()
    assert built.optimizer.meta == 0.7
    assert float(built.optimizer.learning_rate) == pytest.approx(0.004)


def test_models_come_from_the_registry():
    assert registry.model_names(binary=True) == (
        "mlp_meta",
        "vgg16_meta",
        "vgg_small_meta",
    )
    with pytest.raises(ValueError) as info:
        tiny_hypermodel(model="mlp_float")  # not binary: no m to tune per layer
    assert "'mlp_meta', 'vgg16_meta', 'vgg_small_meta'; got 'mlp_float'" in str(
        info.value
    )
    with pytest.raises(ValueError, match="hidden_units_choices applies to models"):
        tiny_hypermodel(
            model="vgg_small_meta", input_shape=(8, 8, 3), hidden_units_choices=(8,)
        )


def test_distributed_role_reads_keras_tuner_variables(monkeypatch):
    for name in (
        "KERASTUNER_TUNER_ID",
        "KERASTUNER_ORACLE_IP",
        "KERASTUNER_ORACLE_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    assert distributed_role() is None
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner3")  # an ID alone: local search
    assert distributed_role() is None
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    with pytest.raises(ValueError, match="not KERASTUNER_ORACLE_PORT"):
        distributed_role()
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    assert distributed_role() == "worker"
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert distributed_role() == "chief"


def test_tuning_uses_only_public_keras_tuner_modules():
    private = []
    for path in sorted((ROOT / "tuning").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            private += [
                f"{path.name}: {n}" for n in names if n.startswith("keras_tuner.src")
            ]
    assert private == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(meta_range=(3.0, 1.0)), "meta_range"),
        (dict(meta_range=(-1.0, 1.0)), "meta_range"),
        (dict(meta_range=(0.0, float("inf"))), "meta_range"),
        (dict(learning_rate_range=(1e-2, 1e-4)), "learning_rate_range"),
        (dict(learning_rate_range=(0.0, 1e-2)), "learning_rate_range"),
        (dict(meta_default=5.0), "meta_default"),
        (dict(hidden_units_choices=(0, 8)), "hidden_units_choices"),
        (dict(model="resnet"), "model"),
    ],
)
def test_hypermodel_rejects_invalid_ranges(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_hypermodel(**kwargs)


def test_validation_split_is_carved_from_training_data(tiny_data_dir):
    data = load_dataset("mnist", data_dir=str(tiny_data_dir))
    config = tiny_base(tiny_data_dir, validation_split=0.25, seed=3)
    tasks, eval_tasks = build_tasks(config)
    assert len(eval_tasks) == 2
    # 240 training images: 60 held out for validation, 180 left to train on.
    assert eval_tasks[0].x_test.shape[0] == 60 and tasks[0].x_train.shape[0] == 180
    # The first task is the identity permutation: every validation image is a
    # training image, none is a test image, and none is also trained on.
    flat = lambda x: {bytes(row) for row in x.reshape(len(x), -1)}  # noqa: E731
    train_images, test_images = flat(data.x_train), flat(data.x_test)
    assert flat(eval_tasks[0].x_test) <= train_images
    assert not flat(eval_tasks[0].x_test) & test_images
    assert not flat(eval_tasks[0].x_test) & flat(tasks[0].x_train)
    # Seeded: the same split again, another one with another seed.
    again = build_tasks(config)[1][0].x_test
    np.testing.assert_array_equal(again, eval_tasks[0].x_test)
    other = build_tasks(tiny_base(tiny_data_dir, validation_split=0.25, seed=4))[1]
    assert not np.array_equal(other[0].x_test, eval_tasks[0].x_test)
    with pytest.raises(ValueError, match="validation_split"):
        tiny_base(tiny_data_dir, validation_split=1.0)


def test_hyperband_budget_sets_epochs_per_task(tmp_path, tiny_data_dir):
    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", 0.003)
    hp.Fixed("meta", 1.2)
    hp.Fixed("tuner/epochs", 4)
    config = trial_config(
        tiny_base(tiny_data_dir),
        tiny_hypermodel(),
        hp,
        validation_split=0.1,
        run_dir=str(tmp_path),
    )
    assert (config.epochs, config.meta, config.learning_rate) == (4, 1.2, 0.003)
    assert config.validation_split == 0.1 and config.hidden_units == (16, 16)


def test_random_search_end_to_end_and_resume(tmp_path, tiny_data_dir):
    def tuner():
        return make_tuner(
            "random",
            base_config=tiny_base(tiny_data_dir),
            hypermodel=tiny_hypermodel(learning_rate_range=(1e-3, 2e-2)),
            max_trials=2,
            directory=str(tmp_path),
            project_name="search",
            validation_split=0.2,
        )

    first = tuner()
    first.search(verbose=0)
    result = summarize_search(first, verbose=0)
    project = tmp_path / "search"
    rows = list(csv.DictReader((project / "results.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert all(r["status"] == "COMPLETED" and r["worker"] == "tuner0" for r in rows)
    objectives = [float(r["cl_objective"]) for r in rows]
    # Each objective is the mean final validation accuracy of the trial's run.
    for row, objective in zip(rows, objectives):
        summary = json.loads(
            (project / "trials" / row["trial"] / "summary.json").read_text()
        )
        assert summary["config"]["validation_split"] == 0.2
        assert summary["mean_accuracy"] == pytest.approx(objective)
        assert float(row["meta"]) == pytest.approx(summary["config"]["meta"])
    assert result["best_objective"] == pytest.approx(max(objectives))
    best = json.loads((project / "best_hyperparameters.json").read_text())
    assert best["cl_objective"] == pytest.approx(max(objectives))
    assert set(best["hyperparameters"]) == {"learning_rate", "meta"}
    # The retrained model: full training data, evaluated on the test set.
    retrained = json.loads((Path(result["best_run_dir"]) / "summary.json").read_text())
    assert retrained["config"]["validation_split"] == 0.0
    assert retrained["config"]["meta"] == pytest.approx(best["hyperparameters"]["meta"])
    assert set(result["test_accuracy"]) == {"task_1", "task_2"}
    assert result["test_mean_accuracy"] == pytest.approx(
        np.mean(list(result["test_accuracy"].values()))
    )
    assert (project / "results.md").read_text().count("COMPLETED") == 2

    # Resume: the same search again runs no new trial and finds the same best.
    mtimes = {p: p.stat().st_mtime for p in (project / "trials").glob("*/summary.json")}
    second = tuner()
    assert second.remaining_trials == 0
    second.search(verbose=0)
    assert len(second.oracle.trials) == 2
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes
    again = summarize_search(second, retrain=False, verbose=0)
    assert again["best_trial_id"] == result["best_trial_id"]


def test_cli_reports_bad_input_in_one_line(tmp_path, tiny_data_dir, capsys):
    base = [
        "search",
        "--data-dir",
        str(tiny_data_dir),
        "--directory",
        str(tmp_path),
        "--hidden-units",
        "8",
    ]
    assert main(base + ["--meta-range", "3", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: meta_range") and "\n" not in error
    assert main(base + ["--lr-range", "0", "1e-2"]) == 2
    assert main(base + ["--lr", "0"]) == 2
    assert main(base + ["--validation-split", "0"]) == 2
    assert main(base + ["--role", "worker"]) == 2
    assert "--oracle-ip" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_chief_and_two_workers(tmp_path, tiny_data_dir):
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "tuning",
        "search",
        "--protocol",
        "permuted",
        "--tasks",
        "2",
        "--tuner",
        "random",
        "--max-trials",
        "4",
        "--epochs",
        "1",
        "--hidden-units",
        "16",
        "--batch-size",
        "40",
        "--data-dir",
        str(tiny_data_dir),
        "--directory",
        str(tmp_path),
        "--project",
        "dist",
        "--quiet",
        "--oracle-ip",
        "127.0.0.1",
        "--oracle-port",
        str(port),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    roles = {
        "chief": ["--role", "chief"],
        "tuner0": ["--role", "worker", "--worker-id", "0"],
        "tuner1": ["--role", "worker", "--worker-id", "1"],
    }
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in roles}
    processes = {}
    deadline = time.monotonic() + 180
    try:
        for name, extra in roles.items():
            processes[name] = subprocess.Popen(
                command + extra,
                cwd=ROOT,
                env=env,
                stdout=logs[name],
                stderr=subprocess.STDOUT,
            )
        for process in processes.values():
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs.values():
            log.close()
    output = {name: (tmp_path / f"{name}.log").read_text() for name in roles}
    for name, process in processes.items():
        assert process.returncode == 0, output[name][-2000:]
    # Each worker ran at least one trial, and they ran all four between them.
    ran = {
        name: {
            line.split()[2].rstrip(":")
            for line in output[name].splitlines()
            if line.startswith(f"[{name}] trial ")
        }
        for name in ("tuner0", "tuner1")
    }
    assert ran["tuner0"] and ran["tuner1"]
    assert ran["tuner0"] | ran["tuner1"] == {"0", "1", "2", "3"}
    assert not ran["tuner0"] & ran["tuner1"]
    # The chief's oracle has all four trials completed, with objectives.
    rows = list(csv.DictReader((tmp_path / "dist" / "results.csv").open()))
    assert len(rows) == 4
    assert all(r["status"] == "COMPLETED" and r["cl_objective"] for r in rows)
    assert {r["trial"]: r["worker"] for r in rows} == {
        t: name for name in ran for t in ran[name]
    }
    assert "test accuracy" in output["chief"]
