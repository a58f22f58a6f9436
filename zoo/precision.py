"""Compute precision of zoo models: float32, or bfloat16 in the binary layers.

A binary layer (binary kernel *and* binary input) multiplies +-1 by +-1: the products
are exact in bfloat16 and oneDNN accumulates them in float32, so the forward sum is the
float32 one; only its result is rounded to bfloat16 when it is stored, which is exact
for |sum| <= 256 and within a relative 2^-9 beyond. With `precision="bf16"` the zoo
builds the hidden binary layers, their quantizers and the parameter-free layers between
them with Keras' `mixed_bfloat16` policy (float32 variables, bfloat16 computation); the
first layer (real-valued pixels) and batch normalization stay float32 (variables,
statistics and output), so the logits are float32. The latent weights the metaplastic
optimizer reads stay float32, and a checkpoint fits a model of either precision.

```python
model = zoo.vgg16_meta(precision="bf16")
model_precision(model)  # "bf16"
twin = as_float32(model)  # the same weights, computed in float32 (for LCE, TFLite)
```

The precision is part of each layer's saved config (its dtype policy), so a saved model
reloads with it; `model_precision` reads it back.
"""

import logging
import os
import platform
from typing import Any, Optional

import tensorflow as tf

from zoo.validation import check_choice

__all__ = [
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "as_float32",
    "bf16_instructions",
    "check_precision",
    "cpu_description",
    "cpu_flags",
    "layer_policy",
    "model_precision",
    "normalization_policy",
]

PRECISIONS = ("float32", "bf16")
# float32: bf16 trains 1.3-1.5x faster on this project's CPU (AVX-512 BF16, no AMX;
# benchmarks/precision.py), but runs slower than float32 on CPUs without bfloat16
# instructions, its CIFAR-10 accuracy parity run is still owed, and a new default would
# keep `python -m training` from resuming run directories made under the old one.
DEFAULT_PRECISION = "float32"
_POLICIES = {"float32": "float32", "bf16": "mixed_bfloat16"}


# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> Optional[frozenset]:
    """Returns the CPU's feature flags, `None` where unknown.

    # Arguments
        cpuinfo: the file listing them (Linux).

    # Returns
        The flags of its first `flags` line, or `None` if the file is unreadable or
        has no such line (another OS).
    """
    try:
        with open(cpuinfo, encoding="utf-8") as file:
            for line in file:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def bf16_instructions(cpuinfo: str = "/proc/cpuinfo") -> Optional[bool]:
    """Returns whether this CPU has bfloat16 instructions, `None` where unknown.

    Without them (e.g. an AVX2-only CPU) TensorFlow emulates bfloat16 and
    `precision="bf16"` trains slower than float32: on a 2-core AMD EPYC with AVX2 only,
    `vgg_small_meta` at 0.06x and `mlp_meta` 4096-4096 at 0.76x of float32's rate
    (`benchmarks/results/precision-20261205T032706Z.json`).

    # Arguments
        cpuinfo: the file listing the CPU's flags (Linux).

    # Returns
        `True` if the flags (`cpu_flags`) name one of `BF16_FLAGS`, `False` if they
        name none, `None` if they are unknown.
    """
    flags = cpu_flags(cpuinfo)
    return None if flags is None else not flags.isdisjoint(BF16_FLAGS)


# The fastest instructions TensorFlow can multiply with, best first (`cpu_description`).
_INSTRUCTION_CLASSES = (
    ("amx_bf16", "AMX"),
    ("avx512_bf16", "AVX-512 BF16"),
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
)


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> str:
    """Returns a one-line description of this machine's CPU: its model name, the CPUs
    this process may run on and its best instruction class.

    Training runs record the seconds they spent on each such description, so a wall
    time says where it was measured: a virtual machine may name its CPU only
    "AMD EPYC", with AVX2 on one host and AVX-512 BF16 on the next.

    ```python
    cpu_description()  # "AMD EPYC, 2 CPUs, AVX-512 BF16"
    ```

    # Arguments
        cpuinfo: the file naming the CPU and listing its flags (Linux).

    # Returns
        `"<model name>, <n> CPUs, <class>"`, the class being the first of AMX,
        AVX-512 BF16, AVX-512 and AVX2 whose flag the CPU has (left out if none, or if
        the flags are unknown); the model name is `platform.processor()`'s, or
        "unknown CPU", where the file has none.
    """
    name = ""
    try:
        with open(cpuinfo, encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or "unknown CPU"
    count = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1
    )
    parts = [name, f"{count} CPU{'s' if count != 1 else ''}"]
    flags = cpu_flags(cpuinfo) or frozenset()
    parts += [label for flag, label in _INSTRUCTION_CLASSES if flag in flags][:1]
    return ", ".join(parts)


def check_precision(precision: Any) -> str:
    """Returns `precision` if it is one of `PRECISIONS`.

    # Raises
        ValueError: if it is not.
    """
    return check_choice(precision, "precision", PRECISIONS)


def layer_policy(precision: str) -> tf.keras.mixed_precision.Policy:
    """The dtype policy of the layers of a `precision` model, but batch normalization.

    # Arguments
        precision: `"float32"` or `"bf16"` (`mixed_bfloat16`: float32 variables,
            bfloat16 computation).

    # Returns
        A `tf.keras.mixed_precision.Policy`.

    # Raises
        ValueError: for an unknown precision.
    """
    return tf.keras.mixed_precision.Policy(_POLICIES[check_precision(precision)])


def normalization_policy() -> tf.keras.mixed_precision.Policy:
    """The dtype policy of batch normalization in every precision: float32 (variables,
    statistics and output; a bfloat16 input is cast up)."""
    return tf.keras.mixed_precision.Policy("float32")


def model_precision(model: tf.keras.Model) -> str:
    """The precision a model computes in: `"bf16"` if any of its layers computes in
    bfloat16, else `"float32"`.

    # Arguments
        model: a Keras model.

    # Returns
        `"bf16"` or `"float32"`.
    """
    for layer in model.submodules:
        if (
            isinstance(layer, tf.keras.layers.Layer)
            and layer.compute_dtype == "bfloat16"
        ):
            return "bf16"
    return "float32"


def _float32_config(config: Any) -> Any:
    """`config` with every dtype policy (nested quantizer configs included) float32."""
    if isinstance(config, dict):
        result = {}
        for key, value in config.items():
            if key == "dtype" and _is_mixed_policy(value):
                result[key] = "float32"
            else:
                result[key] = _float32_config(value)
        return result
    if isinstance(config, tuple):
        return tuple(_float32_config(v) for v in config)
    if isinstance(config, list):
        return [_float32_config(v) for v in config]
    return config


def _is_mixed_policy(value: Any) -> bool:
    if isinstance(value, tf.keras.mixed_precision.Policy):
        return value.compute_dtype != value.variable_dtype
    if isinstance(value, dict) and value.get("class_name") == "Policy":
        return value.get("config", {}).get("name", "").startswith("mixed_")
    return isinstance(value, str) and value.startswith("mixed_")


def _float32_layer(layer: tf.keras.layers.Layer) -> tf.keras.layers.Layer:
    # larq warns about binary kernels without a constraint at every construction; the
    # zoo's are deliberate (see zoo.layers).
    logger = logging.getLogger("larq.layers_base")
    disabled, logger.disabled = logger.disabled, True
    try:
        return type(layer).from_config(_float32_config(layer.get_config()))
    finally:
        logger.disabled = disabled


def as_float32(model: tf.keras.Model) -> tf.keras.Model:
    """Returns `model` computing in float32 throughout, with the same weights.

    LCE and the TFLite converter refuse mixed precision; convert this twin instead. The
    weights (float32 in every precision) are copied, so in inference mode the outputs
    differ from a bf16 model's only by the bfloat16 rounding of its layer outputs.

    # Arguments
        model: a Keras model (any architecture `tf.keras.models.clone_model` accepts).

    # Returns
        `model` itself if it already computes in float32, else a new model of the same
        name.

    # Raises
        ValueError: if `model` is not a `tf.keras.Model`.
    """
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"expected a tf.keras.Model, got {type(model).__name__}.")
    if model_precision(model) == "float32":
        return model
    twin = tf.keras.models.clone_model(model, clone_function=_float32_layer)
    twin.set_weights(model.get_weights())
    return twin
