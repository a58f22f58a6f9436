"""Tests for training/cli.py: options become `RunConfig` fields over the paper's presets,
and bad input is reported in one line."""

import pytest

from training.cli import build_parser, config_from_args, main
from training.config import PRESETS, RunConfig


def parsed(*argv) -> RunConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_baseline_and_float_model_options():
    def config(*argv):
        return parsed("permuted", *argv)

    ewc = config("--tasks", "10", "--meta", "0", "--baseline", "ewc")
    assert (ewc.baseline, ewc.ewc_lambda, ewc.fisher_samples) == ("ewc", 5e3, 5000)
    assert ewc.run_dir == "runs/permuted-mnist-m0-seed0-ewc"
    si = config("--baseline", "si", "--si-c", "0.5", "--si-xi", "0.01")
    assert (si.baseline, si.si_c, si.si_xi) == ("si", 0.5, 0.01)
    assert si.run_dir == "runs/permuted-mnist-m1.35-seed0-si"
    shuffled = config("--baseline", "ewc_random", "--ewc-lambda", "100")
    assert (shuffled.baseline, shuffled.ewc_lambda) == ("ewc_random", 100.0)
    float_model = config("--model", "mlp_float", "--hidden-units", "64")
    assert (float_model.model, float_model.hidden_units) == ("mlp_float", (64,))
    assert float_model.run_dir == "runs/permuted-mnist-m1.35-seed0-float"
    assert config().baseline is None and config().run_dir.endswith("seed0")


def test_defaults_are_the_presets_then_the_run_configs():
    cifar = parsed("stream", "--dataset", "cifar10")
    preset = PRESETS[("stream", "cifar10")]
    for field, value in preset.items():
        assert getattr(cifar, field) == value, field
    assert cifar.run_dir == "runs/stream-cifar10-m13-seed0"
    # Options win over the preset; `fashion-mnist` is `fashion_mnist`.
    fmnist = parsed("stream", "--dataset", "fashion-mnist", "--subsets", "3", "-m", "1")
    assert (fmnist.num_tasks, fmnist.meta, fmnist.epochs) == (3, 1.0, 20)
    assert fmnist.learning_rate == PRESETS[("stream", "fashion_mnist")]["learning_rate"]
    # Fields no preset sets take RunConfig's defaults.
    default = RunConfig()
    for config in (cifar, fmnist, parsed("sequence")):
        for field in ("recalibrate_bn", "batch_norm", "evaluate", "seed"):
            assert getattr(config, field) == getattr(default, field), field
    assert parsed("sequence").datasets == ("mnist", "fashion_mnist")
    train = parsed("train")
    assert (train.protocol, train.datasets, train.epochs) == (
        "sequence",
        ("fashion_mnist",),
        5,
    )
    given = parsed("permuted", "--recalibrate-bn", "0", "--bn", "domain", "--seed", "3")
    assert (given.recalibrate_bn, given.batch_norm, given.seed) == (0, "domain", 3)
    assert given.run_dir == "runs/permuted-mnist-m1.35-seed3"


def test_invalid_option_values_are_one_line_errors(capsys):
    with pytest.raises(ValueError, match="recalibrate_bn must be an integer >= 0"):
        parsed("permuted", "--recalibrate-bn", "-1")
    assert main(["permuted", "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: epochs must be a positive integer, got 0.\n"


def test_cli_reports_bad_input_in_one_line(tmp_path, tiny_data_dir, capsys):
    code = main(
        ["permuted", "--dataset", "nosuchset", "--run-dir", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: unknown dataset 'nosuchset'") and err.count("\n") == 1

    argv = [
        "sequence", "--datasets", "mnist", "fashion_mnist", "--epochs", "1",
        "--hidden-units", "16", "--quiet", "--data-dir", str(tiny_data_dir),
        "--run-dir", str(tmp_path / "seq"),
    ]  # fmt: skip
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0
    assert "Final test accuracy: mnist" in out and "fashion_mnist" in out
    commands = (tmp_path / "seq" / "commands.txt").read_text().splitlines()
    assert commands == ["python -m training " + " ".join(argv)]


def test_permuted_and_stream_take_tasks_and_stream_also_subsets():
    assert parsed("permuted", "--tasks", "4").num_tasks == 4
    assert parsed("stream", "--tasks", "4").num_tasks == 4
    assert parsed("stream", "--subsets", "6").num_tasks == 6
    with pytest.raises(SystemExit):
        parsed("permuted", "--subsets", "4")  # permuted tasks are not subsets


@pytest.mark.parametrize("quiet", [True, False])
def test_epochs_are_shown_by_task(tmp_path, tiny_data_dir, capsys, quiet):
    argv = [
        "permuted", "--tasks", "2", "--epochs", "1", "--hidden-units", "16",
        "--batch-size", "40", "--data-dir", str(tiny_data_dir),
        "--run-dir", str(tmp_path / "run"),
    ] + (["--quiet"] if quiet else [])  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    # Keras' own header counts the run's epochs ("Epoch 2/2" in task 2 of 1 epoch).
    assert "Epoch " not in out
    lines = out.splitlines()
    if quiet:  # one line per epoch
        assert lines[0].startswith("Task 1/2 (task_1), epoch 1/1: loss ")
        assert lines[2].startswith("Task 2/2 (task_2), epoch 1/1: loss ")
        assert " - accuracy " in lines[0] and lines[0].endswith(" s")
    else:  # a header, then Keras' progress bar
        assert "Task 1/2 (task_1), epoch 1/1" in lines
        assert "Task 2/2 (task_2), epoch 1/1" in lines


def test_batch_norm_affine_options():
    # The paper's stream network normalizes without gamma and beta; others keep them.
    assert parsed("stream").batch_norm_affine is False
    assert parsed("stream", "--bn-affine").batch_norm_affine is True
    assert parsed("permuted").batch_norm_affine is True
    assert parsed("permuted", "--no-bn-affine").batch_norm_affine is False


def test_stream_split_option(capsys):
    assert parsed("stream").stream_split == "balanced"
    assert parsed("stream", "--stream-split", "chunks").stream_split == "chunks"
    with pytest.raises(SystemExit):  # streams only
        parsed("permuted", "--stream-split", "chunks")
    assert "--stream-split" in capsys.readouterr().err
