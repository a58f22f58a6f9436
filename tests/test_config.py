"""Tests for training/config.py: validation names the field and its value, model choices
come from the zoo's registry, presets are data, config.json round-trips."""

import dataclasses
import json

import pytest

from training.config import (
    DEFAULT_DATASETS,
    FALLBACK_PRESET,
    PRESETS,
    PROTOCOLS,
    RunConfig,
    preset,
)
from zoo import registry


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"protocol": "rotated"}, "protocol must be one of 'permuted', 'sequence', "
         "'stream'; got 'rotated'."),
        ({"epochs": 0}, "epochs must be a positive integer, got 0."),
        ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5."),
        ({"num_tasks": True}, "num_tasks must be a positive integer, got True."),
        ({"meta": -1.0}, "meta must be a finite number >= 0, got -1.0."),
        ({"meta": {"dense_1": float("nan")}}, "meta['dense_1'] must be a finite number"),
        ({"datasets": ("mnist", "fashion_mnist")}, "protocol 'permuted' takes one "
         "dataset, got datasets ('mnist', 'fashion_mnist')."),
        ({"datasets": ()}, "datasets must name at least one dataset"),
        ({"baseline": "lwf"}, "baseline must be one of None, 'ewc', 'ewc_random', "
         "'si'; got 'lwf'."),
        ({"ewc_lambda": -1.0}, "ewc_lambda must be a finite number >= 0, got -1.0."),
        ({"si_xi": 0.0}, "si_xi must be a finite number > 0, got 0.0."),
        ({"fisher_samples": 0}, "fisher_samples must be a positive integer, got 0."),
        ({"learning_rate": 0}, "learning_rate must be a finite number > 0, got 0."),
        ({"recalibrate_bn": -1}, "recalibrate_bn must be an integer >= 0, got -1."),
        ({"seed": -1}, "seed must be an integer >= 0, got -1."),
        ({"seed": 2**32}, "seed must be an integer >= 0 and < 2**32, got 4294967296."),
        ({"validation_split": 1.0}, "validation_split must be a finite number >= 0 "
         "and < 1, got 1.0."),
        ({"batch_norm": "layer"}, "batch_norm must be one of 'task', 'domain'"),
        ({"evaluate": "never"}, "evaluate must be one of 'epoch', 'task'"),
        ({"augment": "mixup"}, "augment must be one of None, 'flip_crop', 'flip_rotate'"),
        ({"hidden_units": (64, 0)}, "hidden_units must be a non-empty sequence of "
         "positive integers, got (64, 0)."),
    ],
)  # fmt: skip
def test_invalid_field_is_named_with_its_value_only(overrides, message):
    with pytest.raises(ValueError) as error:
        RunConfig(**overrides)
    text = str(error.value)
    assert text.startswith(message)
    assert "\n" not in text and "run_dir" not in text  # not the whole configuration


def test_model_choices_are_the_registry():
    assert RunConfig(model="vgg_small_meta").model == "vgg_small_meta"
    with pytest.raises(ValueError) as error:
        RunConfig(model="mlp_binary")
    names = registry.model_names()
    assert len(names) >= 4
    assert str(error.value) == (
        f"model must be one of {', '.join(map(repr, names))}; got 'mlp_binary'."
    )


def test_fields_are_normalised():
    config = RunConfig(
        datasets=["mnist"], hidden_units=[64, 32], meta={"dense_1": 2, 3: 1}
    )
    assert config.datasets == ("mnist",) and config.hidden_units == (64, 32)
    assert config.meta == {"dense_1": 2.0, "3": 1.0}
    assert RunConfig(datasets="mnist").datasets == ("mnist",)


def test_presets_are_the_papers_settings():
    # Fig. 2: 6 tasks x 40 epochs at 4096-4096, weight decay 1e-7 (authors' README).
    assert preset("permuted", "mnist") == dict(
        meta=1.35, learning_rate=0.005, batch_size=100, epochs=40, num_tasks=6,
        hidden_units=(4096, 4096), weight_decay=1e-7,
    )  # fmt: skip
    assert preset("stream", "fashion-mnist")["meta"] == 2.5
    assert preset("stream", "/data/CIFAR10.tar.gz")["model"] == "vgg_small_meta"
    assert preset("stream", "cifar10")["epochs"] == 200
    # A sequence is keyed by all its datasets: Fig. 4 and its reverse, else fallback.
    assert preset("sequence", ("mnist", "fashion-mnist"))["meta"] == 1.5
    assert preset("sequence", ["fashion_mnist", "mnist"])["epochs"] == 50
    assert preset("sequence", "mnist") == dict(FALLBACK_PRESET)
    copy = preset("stream", "cifar10")
    copy["meta"] = 0.0  # a copy: the preset itself is read-only
    assert PRESETS[("stream", "cifar10")]["meta"] == 13.0
    with pytest.raises(TypeError):
        PRESETS[("stream", "cifar10")]["meta"] = 0.0
    with pytest.raises(ValueError, match="protocol must be one of"):
        preset("rotated", "mnist")
    for (protocol, key), fields in PRESETS.items():
        assert protocol in PROTOCOLS
        # every preset is a valid configuration
        RunConfig(protocol=protocol, datasets=tuple(key.split("+")), **fields)


def test_from_preset():
    config = RunConfig.from_preset("stream", ("cifar10",), epochs=2, run_dir="r")
    assert (config.meta, config.batch_size) == (13.0, 64)
    assert config.augment == "flip_rotate_or_crop" and config.weight_decay == 0.0
    assert (config.epochs, config.run_dir) == (2, "r")
    assert RunConfig.from_preset("sequence").datasets == DEFAULT_DATASETS["sequence"]
    assert RunConfig.from_preset("sequence").epochs == 50
    permuted = RunConfig.from_preset("permuted")
    assert (permuted.num_tasks, permuted.epochs) == (6, 40)
    assert permuted.hidden_units == (4096, 4096)


def test_defaults_are_the_reference_codes_protocol():
    config = RunConfig()
    assert config.recalibrate_bn == 0  # BatchNorm statistics saved per task
    assert config.weight_decay == 1e-7 and config.baseline_on == "binary"
    assert config.optimizer_per_task is True  # a fresh Adam per task ...
    assert RunConfig(protocol="stream").optimizer_per_task is False  # ... not a stream
    assert RunConfig(protocol="stream", optimizer_per_task=True).optimizer_per_task
    with pytest.raises(ValueError, match="weight_decay must be"):
        RunConfig(weight_decay=-1e-7)
    with pytest.raises(ValueError, match="baseline_on must be one of"):
        RunConfig(baseline_on="sign")


def test_old_config_json_keeps_its_behaviour():
    # Written before weight_decay and baseline_on existed: the code that wrote it had
    # no weight decay and consolidated the latent weights.
    saved = RunConfig(baseline="ewc").to_json()
    for name in ("weight_decay", "baseline_on", "precision"):
        del saved[name]
    old = RunConfig.from_json(saved)
    assert (old.weight_decay, old.baseline_on, old.precision) == (
        0.0, "latent", "float32",
    )  # fmt: skip
    assert RunConfig.saved_identity(saved) == old.identity()
    assert RunConfig.saved_identity(saved) != RunConfig(baseline="ewc").identity()


def test_json_round_trip_and_identity():
    config = RunConfig(meta={"dense_1": 1.5}, hidden_units=(8,), run_dir="runs/a")
    saved = json.loads(json.dumps(config.to_json()))
    assert saved["hidden_units"] == [8] and saved["datasets"] == ["mnist"]
    assert RunConfig.from_json(saved) == config
    assert RunConfig.from_json({**saved, "obsolete": 1}) == config
    moved = dataclasses.replace(config, run_dir="elsewhere", data_dir="/data")
    assert moved.identity() == config.identity()
    assert "run_dir" not in config.identity() and "data_dir" not in config.identity()
    # A config.json written before a field existed: the field takes its default.
    older = {k: v for k, v in saved.items() if k != "recalibrate_bn"}
    assert RunConfig.saved_identity(older) == config.identity()
    assert RunConfig.from_json(older).recalibrate_bn == RunConfig().recalibrate_bn
    assert RunConfig.saved_identity({**saved, "meta": 0.0}) != config.identity()
