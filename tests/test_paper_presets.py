"""The paper's experiments as data (`training.paper`)."""

import pytest

from training import paper
from training.config import RunConfig


def test_every_run_at_every_scale_is_a_valid_configuration():
    for name in paper.experiment_names():
        spec = paper.experiment(name)
        assert spec.scale_names()[0] == paper.PAPER_SCALE
        for run in spec.runs:
            for scale in spec.scale_names():
                config = paper.run_config(name, run, scale=scale, seed=2)
                assert isinstance(config, RunConfig) and config.seed == 2
                owner, owner_run = spec.shared.get(run, (name, run))
                assert config.run_dir == f"runs/paper/{owner}/{scale}/{owner_run}-seed2"
                if run in spec.shared:  # the same run, trained once
                    assert config == paper.run_config(
                        owner, owner_run, scale=scale, seed=2
                    )


def test_fig2_is_the_authors_command():
    # --hidden-layers 4096 4096 --lr 0.005 --decay 1e-7 --meta M --epochs-per-task 40,
    # six pMNIST tasks.
    for m in (0.0, 0.5, 1.0, 1.35):
        config = paper.run_config("fig2", f"m{m:g}")
        assert (config.protocol, config.datasets) == ("permuted", ("mnist",))
        assert (config.num_tasks, config.epochs) == (6, 40)
        assert config.hidden_units == (4096, 4096) and config.meta == m
        assert (config.learning_rate, config.batch_size) == (0.005, 100)
        assert config.weight_decay == 1e-7 and config.recalibrate_bn == 0
        assert config.optimizer_per_task and config.model == "mlp_meta"
    quick = paper.run_config("fig2", "m1.35", scale="quick")
    assert quick.hidden_units == (1024, 1024) and quick.epochs == 10


def test_width_sweeps_use_the_smaller_decay_and_streams_one_optimizer():
    assert paper.run_config("fig3ab", "ewc-w512").weight_decay == 1e-8
    assert paper.run_config("fig3ab", "ewc-w512").baseline == "ewc"
    assert paper.run_config("fig3cd", "m0-w4096").joint
    # Fig. 3 plots final accuracies: evaluated at task ends only.
    assert paper.run_config("fig3ab", "m1.35-w4096", scale="quick").evaluate == "task"
    assert paper.run_config("fig3cd", "m1.35-w512").evaluate == "task"
    stream = paper.run_config("stream_fmnist", "m2.5")
    assert (stream.num_tasks, stream.epochs, stream.meta) == (60, 20, 2.5)
    assert stream.optimizer_per_task is False
    cifar = paper.run_config("stream_cifar10", "m13")
    assert (cifar.epochs, cifar.batch_size, cifar.learning_rate) == (200, 64, 1e-4)
    assert cifar.model == "vgg_small_meta" and cifar.weight_decay == 0.0


def test_fields_override_and_errors_name_the_problem():
    config = paper.run_config("fig2", "m0", precision="bf16", run_dir="r")
    assert config.precision == "bf16" and config.run_dir == "r"
    with pytest.raises(ValueError, match="experiment must be one of"):
        paper.run_config("fig9", "m0")
    with pytest.raises(ValueError, match="run must be one of"):
        paper.run_config("fig2", "m2")
    with pytest.raises(ValueError, match="scale must be one of"):
        paper.run_config("fig2", "m0", scale="tiny")
    with pytest.raises(ValueError, match="not RunConfig fields"):
        paper.run_config("fig2", "m0", width=3)
