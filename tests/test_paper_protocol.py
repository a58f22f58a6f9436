"""The reference code's protocol as the runner's default (Laborieux et al. 2021): one
optimizer and one BatchNorm state for a whole stream, weight decay passed to the
optimizer, EWC on the binarized weights; on tiny generated data."""

import tensorflow as tf

from training.assembly import make_optimizer
from training.config import RunConfig
from training.rundir import RunDirectory
from training.runner import run


def _config(tmp_path, data_dir, **overrides) -> RunConfig:
    values = dict(
        protocol="stream",
        datasets=("fashion_mnist",),
        num_tasks=3,
        epochs=1,
        hidden_units=(16, 16),
        batch_size=40,
        evaluate="task",
        data_dir=str(data_dir),
        run_dir=str(tmp_path / "run"),
    )
    return RunConfig(**{**values, **overrides})


def _optimizer_steps(run_dir) -> int:
    checkpoint, progress = RunDirectory(run_dir).last_checkpoint()
    reader = tf.train.load_checkpoint(checkpoint)
    (name,) = [n for n in reader.get_variable_to_shape_map() if "optimizer/iter" in n]
    return int(reader.get_tensor(name)), progress


def test_a_stream_keeps_one_optimizer_and_one_batchnorm_state(tmp_path, tiny_data_dir):
    shared = _config(tmp_path / "shared", tiny_data_dir)
    assert shared.optimizer_per_task is False  # the default of a stream
    fresh = _config(tmp_path / "fresh", tiny_data_dir, optimizer_per_task=True)
    run(shared, verbose=0)
    run(fresh, verbose=0)
    shared_steps, progress = _optimizer_steps(shared.run_dir)
    fresh_steps, _ = _optimizer_steps(fresh.run_dir)
    # One Adam for the stream counts every step; a fresh one per subset only the last
    # subset's (equal class-balanced subsets).
    assert shared_steps == 3 * fresh_steps > 0
    assert progress.bn_states == {}  # nothing kept per subset


def test_weight_decay_reaches_the_optimizer():
    assert make_optimizer(RunConfig()).weight_decay == 1e-7
    assert make_optimizer(RunConfig(weight_decay=0.0)).weight_decay == 0.0
    assert make_optimizer(RunConfig(weight_decay=1e-8)).weight_decay == 1e-8


def test_the_runner_passes_what_ewc_consolidates(tmp_path, tiny_data_dir):
    def kernels(on):
        config = _config(
            tmp_path / on,
            tiny_data_dir,
            protocol="permuted",
            datasets=("mnist",),
            num_tasks=2,
            meta=0.0,
            baseline="ewc",
            ewc_lambda=10.0,
            fisher_samples=20,
            baseline_on=on,
        )
        run(config, verbose=0)
        checkpoint, _ = RunDirectory(config.run_dir).last_checkpoint()
        reader = tf.train.load_checkpoint(checkpoint)
        return {
            n: reader.get_tensor(n)
            for n in reader.get_variable_to_shape_map()
            if n.startswith("model/") and "kernel" in n and "optimizer" not in n
        }

    assert RunConfig().baseline_on == "binary"
    binary, latent = kernels("binary"), kernels("latent")
    assert binary.keys() == latent.keys() and binary
    # Same seed, same first task: only the penalty of the second task differs.
    assert any((binary[n] != latent[n]).any() for n in binary)


def test_a_stream_network_normalizes_without_gamma_and_beta(tmp_path, tiny_data_dir):
    import pytest

    from training.assembly import restore_run

    config = _config(tmp_path, tiny_data_dir)
    assert config.batch_norm_affine is False  # the reference's stream network
    assert RunConfig().batch_norm_affine is True  # every other protocol
    assert _config(tmp_path, tiny_data_dir, model="vgg_small_meta").batch_norm_affine
    with pytest.raises(ValueError, match="not available for model 'vgg16_meta'"):
        RunConfig(model="vgg16_meta", batch_norm_affine=False)
    # A config.json written before the field existed: the network it trained.
    old = {k: v for k, v in config.to_json().items() if k != "batch_norm_affine"}
    assert RunConfig.from_json(old).batch_norm_affine is True
    # Subsets: class-balanced unless asked for the reference's random chunks; a
    # config.json written before the option existed was balanced.
    assert config.stream_split == "balanced"
    old = {k: v for k, v in config.to_json().items() if k != "stream_split"}
    assert RunConfig.from_json(old).stream_split == "balanced"
    with pytest.raises(ValueError, match="stream_split"):
        RunConfig(protocol="stream", stream_split="random")

    run(config, verbose=0)
    model = restore_run(config.run_dir).model
    norms = [
        layer
        for layer in model.layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]
    assert [layer.name for layer in norms] == ["bn_1", "bn_2", "bn_out"]
    for layer in norms:
        assert not layer.scale and not layer.center
        assert [w.name.split("/")[-1] for w in layer.weights] == [
            "moving_mean:0",
            "moving_variance:0",
        ]
