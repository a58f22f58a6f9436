"""Deployment of zoo models with Larq Compute Engine (LCE): convert, inspect, verify.

LCE turns a binary layer (binary kernel *and* binary input) into its bit-packed
`LceBconv2d` operator: 1 bit per weight instead of 32, and XNOR-popcount arithmetic on
64-bit ARM. It does so for `QuantConv2D` only, so `to_lce_compatible` first rewrites every
binary `QuantDense` as a 1x1 `QuantConv2D` on a `(1, 1, units)` tensor, the outputs
staying identical. The first layer, which sees real-valued pixels, stays float32
(a `FULLY_CONNECTED` or `CONV_2D` op with +-1 weights), like any float layer.

```python
import zoo
from zoo.export import convert_to_lce, lce_op_report, verify_lce

model = zoo.mlp_meta()
flatbuffer = convert_to_lce(model, path="mlp_meta.tflite")  # raises if a layer stayed float
print(lce_op_report(flatbuffer, model)["ops"])  # {'RESHAPE': 3, 'LceBconv2d': 2, ...}
print(verify_lce(flatbuffer, model, x_test, y_test, samples=1000, seed=0))
```

`verify_lce(..., samples=N)` compares on a seeded, class-stratified sample of N images
(`zoo.datasets.stratified_sample`), never on the first N: a test split may be sorted
by class (CIFAR-10's first 1,000 test images are airplanes).

The flatbuffer holds only the signs of the latent weights: further (metaplastic) training
starts from the Keras model (SavedModel) the flatbuffer was converted from, never from
the flatbuffer itself.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import larq as lq
import numpy as np
import tensorflow as tf

from zoo import layers, pretrained, registry
from zoo.datasets import stratified_sample
from zoo.model_directory import CARD, SAVED_MODEL, verify_pretrained
from zoo.precision import as_float32, model_precision
from zoo.saved_model import load_saved_model, quiet_tensorflow
from zoo.validation import check_positive_int

ModelSource = Union[tf.keras.Model, str, os.PathLike]

# LCE's bit-packed binary convolution: what every hidden binary layer must become.
BINARY_OP = "LceBconv2d"
# Ops that carry a layer's kernel (input 1), float or binary.
KERNEL_OPS = ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D", BINARY_OP)
TARGETS = ("arm", "xcore")
# Ops that only move a binarized tensor around on its way to the next layer.
_PASS_THROUGH_OPS = ("RESHAPE", "PAD", "PADV2", "SQUEEZE", "EXPAND_DIMS")
# Ops whose output is a binarized tensor in float form (+-1.0).
_BINARIZING_OPS = ("LceDequantize", "SIGN")
_SIGN_QUANTIZERS = ("ste_sign", "approx_sign", "swish_sign")
_INSTALL_HINT = 'install Larq Compute Engine with `pip install -e ".[lce]"`'


# Keras side -------------------------------------------------------------------------


def _is_sign_quantizer(quantizer) -> bool:
    if quantizer is None:
        return False
    if getattr(quantizer, "precision", None) == 1:
        return True
    return getattr(quantizer, "__name__", None) in _SIGN_QUANTIZERS


def is_binary_layer(layer: tf.keras.layers.Layer) -> bool:
    """Whether `layer` is a hidden binary layer: binary kernel *and* binary input.

    These are the layers LCE runs as bit-packed `LceBconv2d`. The first layer of a zoo
    model has a binary kernel but real-valued input: it is not one of them.

    # Arguments
        layer: any Keras layer.

    # Returns
        `True` for a `QuantDense` or `QuantConv2D` whose input and kernel quantizers are
        both sign functions (precision 1).
    """
    return (
        isinstance(layer, (lq.layers.QuantDense, lq.layers.QuantConv2D))
        and _is_sign_quantizer(layer.input_quantizer)
        and _is_sign_quantizer(layer.kernel_quantizer)
    )


def _kernel_layers(model: tf.keras.Model) -> list:
    """The layers holding a kernel (dense and convolutions), in model order."""
    return [
        layer for layer in model.layers if getattr(layer, "kernel", None) is not None
    ]


def _chain(model: tf.keras.Model) -> list:
    """The model's layers after its input, checking that each feeds the next."""
    if not isinstance(model, tf.keras.Model):
        raise ValueError(
            f"expected a tf.keras.Model, got {type(model).__name__}; build one with a "
            "zoo factory or load it with tf.keras.models.load_model"
        )
    if len(model.inputs or ()) != 1 or len(model.outputs or ()) != 1:
        raise ValueError(
            f"model {model.name!r} should have one input and one output to be converted, "
            f"got {len(model.inputs or ())} and {len(model.outputs or ())}"
        )
    chain, previous = [], model.inputs[0]
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.InputLayer):
            continue
        try:
            layer_input = layer.input
        except AttributeError:  # a layer called more than once
            layer_input = None
        if layer_input is not previous:
            raise ValueError(
                f"model {model.name!r} is not a chain of layers (layer {layer.name!r} "
                "does not take the previous layer's output); only sequential "
                "architectures such as the zoo's can be rewritten for LCE"
            )
        chain.append(layer)
        previous = layer.output
    if previous is not model.outputs[0]:
        raise ValueError(
            f"model {model.name!r} does not end with its last layer; only sequential "
            "architectures such as the zoo's can be rewritten for LCE"
        )
    return chain


def _clone(layer: tf.keras.layers.Layer, config: Optional[dict] = None):
    with layers.silence_starved_weights_warning():
        return type(layer).from_config(config or layer.get_config())


def _call_with_weights(layer, source, x, weights=None):
    """Calls `layer` on `x`, then gives it `source`'s weights (or `weights`)."""
    y = layer(x)
    layer.set_weights(source.get_weights() if weights is None else weights)
    return y


def _as_1x1_conv(layer: lq.layers.QuantDense, x: tf.Tensor) -> tf.Tensor:
    config = layer.get_config()
    with layers.silence_starved_weights_warning():
        conv = lq.layers.QuantConv2D(
            layer.units,
            1,
            input_quantizer=config["input_quantizer"],
            kernel_quantizer=config["kernel_quantizer"],
            activation=config["activation"],
            use_bias=layer.use_bias,
            name=f"{layer.name}_1x1",
            dtype=layer.dtype,
        )
    weights = layer.get_weights()
    weights[0] = weights[0].reshape(1, 1, *weights[0].shape)
    return _call_with_weights(conv, layer, x, weights)


def _is_last_axis_batch_norm(layer) -> bool:
    if not isinstance(layer, tf.keras.layers.BatchNormalization):
        return False
    return np.atleast_1d(layer.axis).tolist() in ([1], [-1])


def to_lce_compatible(model: tf.keras.Model) -> tf.keras.Model:
    """Returns an equivalent model in which LCE can bit-pack every binary dense layer.

    Every binary `QuantDense` (binary input and kernel, see `is_binary_layer`) becomes
    `Reshape((1, 1, units_in))` (named `<dense>_reshape`), then a 1x1 `QuantConv2D`
    (`<dense>_1x1`) with the same quantizers, activation and bias, and the kernel
    reshaped to `(1, 1, units_in, units)`. The batch normalization and dropout after it
    act on the `(1, 1, units)` tensor, and consecutive binary dense layers stay in that
    form, so that LCE fuses batch norm + sign into bit-packed outputs between them; a
    `Reshape` (`<layer>_flat`) flattens back where a 2-D tensor is needed and at the end.
    Every other layer, the real-input first layer included, is copied unchanged (with
    its weights). A bf16 model (`zoo.precision`) is first made float32 (`as_float32`),
    as LCE converts float32 models only. In inference mode the outputs equal the
    original model's (a bf16 model's up to its bfloat16 rounding).

    # Arguments
        model: a model whose layers form a chain (as every zoo model does).

    # Returns
        A new `tf.keras.Model` with the same name, input and output shapes; the original
        model is left untouched.

    # Raises
        ValueError: if `model` is not a single-input, single-output chain of layers.
    """
    chain = _chain(model)
    if model_precision(model) != "float32":  # LCE converts float32 models only
        model = as_float32(model)
        chain = _chain(model)
    source = model.inputs[0]
    first = model.layers[0]
    inputs = tf.keras.Input(
        shape=tuple(source.shape[1:]),
        dtype=source.dtype,
        name=first.name if isinstance(first, tf.keras.layers.InputLayer) else None,
    )
    x, as_1x1, last = inputs, False, None

    def flat(x, name):
        return tf.keras.layers.Reshape((x.shape[-1],), name=f"{name}_flat")(x)

    for layer in chain:
        if isinstance(layer, lq.layers.QuantDense) and is_binary_layer(layer):
            if not as_1x1:
                x = tf.keras.layers.Reshape(
                    (1, 1, x.shape[-1]), name=f"{layer.name}_reshape"
                )(x)
            x, as_1x1 = _as_1x1_conv(layer, x), True
        elif as_1x1 and _is_last_axis_batch_norm(layer):
            config = dict(layer.get_config(), axis=-1)
            x = _call_with_weights(_clone(layer, config), layer, x)
        elif as_1x1 and isinstance(layer, tf.keras.layers.Dropout):
            x = _call_with_weights(_clone(layer), layer, x)
        else:
            if as_1x1:
                x, as_1x1 = flat(x, last.name), False
            x = _call_with_weights(_clone(layer), layer, x)
        last = layer
    if as_1x1:
        x = flat(x, last.name)
    return tf.keras.Model(inputs, x, name=model.name)


def float_twin(model: tf.keras.Model) -> tf.keras.Model:
    """Returns the model with float32 kernels holding the quantized (sign) values.

    The "float twin" has the same architecture and the same layers, but every kernel
    quantizer is removed and the kernel replaced by its quantized value, `sign(Wh)` (+-1,
    with sign(0) = +1 as in larq) for binary kernels, so its outputs equal the original
    model's; the input quantizers stay. Converted by the standard TFLite converter, it is
    the float baseline of the size and latency comparisons (not the latent weights `Wh`,
    which would give a different function).

    # Arguments
        model: a Keras model (any architecture `tf.keras.models.clone_model` accepts).

    # Returns
        A new `tf.keras.Model`.
    """
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"expected a tf.keras.Model, got {type(model).__name__}")
    model = as_float32(model)  # the TFLite converter refuses mixed precision

    def clone(layer):
        config = layer.get_config()
        if getattr(layer, "kernel_quantizer", None) is not None:
            config["kernel_quantizer"] = None
        return _clone(layer, config)

    twin = tf.keras.models.clone_model(model, clone_function=clone)
    for original, copy in zip(model.layers, twin.layers):
        weights = original.get_weights()
        quantizer = getattr(original, "kernel_quantizer", None)
        if quantizer is not None:
            weights[0] = quantizer(tf.constant(weights[0])).numpy()
        copy.set_weights(weights)
    return twin


# Loading and converting -------------------------------------------------------------


def _looks_like_path(name: str) -> bool:
    return (
        os.sep in name
        or "/" in name
        or name.startswith((".", "~"))
        or name.endswith((".keras", ".h5"))
    )


def load_model(
    name: Union[str, os.PathLike],
    *,
    input_shape: Optional[Sequence[int]] = None,
    num_classes: Optional[int] = None,
) -> tuple:
    """Returns the model a name refers to: a saved model, a zoo factory or a pretrained name.

    Looked up in order: an existing path (see `zoo.saved_model.load_saved_model`; a
    pretrained model directory, with `model_card.json`, is verified first); a
    binary zoo factory name (`zoo.registry.model_names(binary=True)`: `mlp_meta`,
    `vgg16_meta`, `vgg_small_meta`), built with random weights, for trying out; a
    registered pretrained model name (`zoo.pretrained.load_pretrained`).

    # Arguments
        name: a path, factory name or pretrained name.
        input_shape: the input shape of a factory-built model (default: the factory's).
        num_classes: the number of classes of a factory-built model (default: the
            factory's).

    # Returns
        A tuple `(model, description)`; the description says where the model came from.

    # Raises
        ValueError: if `name` is none of the above or the model cannot be loaded.
    """
    text = os.fspath(name)
    path = Path(text).expanduser()
    factories = registry.model_names(binary=True)
    if path.is_dir() and (path / CARD).is_file():
        verify_pretrained(path)
        model = load_saved_model(path / SAVED_MODEL)
        return model, f"pretrained model directory {path}"
    if path.is_dir() and not any(
        (path / file).is_file() for file in ("saved_model.pb", "saved_model.pbtxt")
    ):
        raise ValueError(
            f"{path} is not a SavedModel directory (no saved_model.pb); pass a "
            f"directory written by model.save, a zoo factory name "
            f"({', '.join(factories)}) or a pretrained model name"
        )
    if path.exists():
        return load_saved_model(path), f"saved model {path}"
    if _looks_like_path(text):
        raise ValueError(
            f"{text} does not exist; pass a SavedModel directory, a zoo factory name "
            f"({', '.join(factories)}) or a pretrained model name"
        )
    if text in factories:
        kwargs = {}
        if input_shape is not None:
            kwargs["input_shape"] = tuple(input_shape)
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        return registry.get_model(text).factory(**kwargs), f"{text} (random weights)"
    if not pretrained.is_pretrained_name(text):
        names = sorted(pretrained.pretrained_models())
        raise ValueError(
            f"unknown model {text!r}; pass a SavedModel directory, a zoo factory name "
            f"({', '.join(factories)}) or a pretrained model name "
            f"({', '.join(names) or 'none registered'})"
        )
    return pretrained.load_pretrained(text), f"pretrained {text}"


def _lce():
    try:
        import larq_compute_engine
    except ImportError as error:
        raise ImportError(
            f"Larq Compute Engine is not installed; {_INSTALL_HINT}"
        ) from error
    return larq_compute_engine


def _as_model(model: ModelSource) -> tf.keras.Model:
    if isinstance(model, (str, os.PathLike)):
        return load_saved_model(model)
    if not isinstance(model, tf.keras.Model):
        raise ValueError(
            f"expected a tf.keras.Model or the path of a saved model, got "
            f"{type(model).__name__}"
        )
    return model


def convert_to_lce(
    model: ModelSource,
    *,
    path: Union[str, os.PathLike, None] = None,
    target: str = "arm",
    check: bool = True,
) -> bytes:
    """Converts a model to an LCE flatbuffer, binary layers bit-packed.

    The model is first rewritten by `to_lce_compatible`, then converted by
    `larq_compute_engine.convert_keras_model`; `check_lce_conversion` then makes sure
    every hidden binary layer became `LceBconv2d`.

    # Arguments
        model: a Keras model, or the path of a saved one (see `load_saved_model`).
        path: where to write the flatbuffer (`.tflite`), if anywhere.
        target: LCE's target, `"arm"` (64-bit ARM: Raspberry Pi, Android) or `"xcore"`.
        check: whether to raise if a hidden binary layer did not become `LceBconv2d`.

    # Returns
        The flatbuffer, as bytes.

    # Raises
        ValueError: for an unknown target, a model that cannot be loaded or rewritten,
            an unwritable `path`, or (with `check`) a binary layer left in float.
        ImportError: if Larq Compute Engine is not installed.
    """
    if target not in TARGETS:
        raise ValueError(f"`target` should be one of {TARGETS}, got {target!r}.")
    if path is not None and Path(path).is_dir():
        raise ValueError(f"output {path} is a directory; pass a .tflite file path")
    if path is not None and not Path(path).expanduser().parent.is_dir():
        raise ValueError(
            f"the directory of output {path} does not exist; create it first"
        )
    model = _as_model(model)
    lce = _lce()
    compatible = to_lce_compatible(model)
    with quiet_tensorflow():
        flatbuffer = lce.convert_keras_model(compatible, target=target)
    if check:
        check_lce_conversion(flatbuffer, model)
    if path is not None:
        Path(path).expanduser().write_bytes(flatbuffer)
    return flatbuffer


def float_twin_tflite(model: ModelSource) -> bytes:
    """Converts the model's float twin (see `float_twin`) with the standard TFLite converter.

    # Arguments
        model: a Keras model, or the path of a saved one.

    # Returns
        The float32 TFLite flatbuffer, whose outputs equal the model's.
    """
    twin = float_twin(_as_model(model))
    with quiet_tensorflow():
        return tf.lite.TFLiteConverter.from_keras_model(twin).convert()


# Reading flatbuffers ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Op:
    name: str  # builtin name (CONV_2D) or custom code (LceBconv2d)
    inputs: tuple
    outputs: tuple
    constant_bytes: int  # bytes of the constant tensors it reads
    kernel_shape: Optional[tuple]  # shape of input 1 for kernel ops
    kernel_bytes: int


def _builtin_names() -> dict:
    from tensorflow.lite.python import schema_py_generated as schema

    return {
        code: name
        for name, code in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }


def _parse(flatbuffer: bytes) -> list:
    """The operators of the flatbuffer's main subgraph, in execution order."""
    from tensorflow.lite.python import schema_py_generated as schema

    if not isinstance(flatbuffer, (bytes, bytearray)) or len(flatbuffer) < 8:
        raise ValueError("expected the bytes of a TFLite flatbuffer (.tflite)")
    if bytes(flatbuffer[4:8]) != b"TFL3":
        raise ValueError("these bytes are not a TFLite flatbuffer (no TFL3 identifier)")
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    names = _builtin_names()
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            codes.append(code.CustomCode().decode())
        else:
            codes.append(names.get(builtin, str(builtin)))

    def buffer_bytes(tensor) -> int:
        buffer = model.Buffers(tensor.Buffer())
        size = buffer.DataLength()
        if not size and hasattr(buffer, "Size"):  # stored outside the flatbuffer
            size = int(buffer.Size())
        return size

    graph = model.Subgraphs(0)
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name = codes[op.OpcodeIndex()]
        inputs = tuple(int(t) for t in op.InputsAsNumpy()) if op.InputsLength() else ()
        outputs = (
            tuple(int(t) for t in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        )
        sizes = [buffer_bytes(graph.Tensors(t)) if t >= 0 else 0 for t in inputs]
        kernel_shape, kernel_bytes = None, 0
        if name in KERNEL_OPS and len(inputs) > 1:
            kernel = graph.Tensors(inputs[1])
            kernel_shape = tuple(int(d) for d in kernel.ShapeAsNumpy())
            kernel_bytes = sizes[1]
        ops.append(_Op(name, inputs, outputs, sum(sizes), kernel_shape, kernel_bytes))
    return ops


def _has_binarized_input(op: _Op, ops: list, producers: dict) -> bool:
    tensor = op.inputs[0]
    while tensor in producers:
        producer = ops[producers[tensor]]
        if producer.name in _BINARIZING_OPS:
            return True
        if producer.name not in _PASS_THROUGH_OPS:
            return False
        tensor = producer.inputs[0]
    return False


def _match_kernel_ops(ops: list, model: tf.keras.Model) -> list:
    """Pairs each kernel layer of `model` with its kernel op, in order."""
    kernel_ops = [op for op in ops if op.name in KERNEL_OPS]
    kernel_layers = _kernel_layers(model)
    matches = len(kernel_ops) == len(kernel_layers) and all(
        op.kernel_shape and op.kernel_shape[0] == layer.kernel.shape[-1]
        for op, layer in zip(kernel_ops, kernel_layers)
    )
    if not matches:
        raise ValueError(
            f"the flatbuffer's {len(kernel_ops)} dense/convolution ops do not match the "
            f"{len(kernel_layers)} kernel layers of model {model.name!r}; pass the model "
            "the flatbuffer was converted from"
        )
    return list(zip(kernel_layers, kernel_ops))


def lce_op_report(flatbuffer: bytes, model: Optional[tf.keras.Model] = None) -> dict:
    """Counts the ops of a flatbuffer and checks that binary layers were bit-packed.

    Without `model`, a binary layer left in float is recognised by its float kernel op
    (`CONV_2D`, `FULLY_CONNECTED`) reading a binarized tensor (`LceDequantize` or
    `SIGN` output). With `model`, the kernel ops are also paired with the model's
    kernel layers, in order, so that they are reported by layer name.

    # Arguments
        flatbuffer: a TFLite flatbuffer (from `convert_to_lce` or any converter).
        model: optionally, the Keras model it was converted from (original or
            `to_lce_compatible` form).

    # Returns
        A dict: `size_bytes`; `ops` (count per op type, most frequent first);
        `binary_ops` (number of `LceBconv2d`); `float_ops_on_binary_input` (how many
        float kernel ops read binarized input); with `model`, `binary_layers` (names of
        its hidden binary layers), `converted` and `not_converted` (which of them did and
        did not become `LceBconv2d`) and `float_layers` (kernel layers left in float,
        such as the real-input first layer); and `all_binary_converted`.

    # Raises
        ValueError: if `flatbuffer` is not a TFLite flatbuffer, or does not match `model`.
    """
    ops = _parse(flatbuffer)
    producers = {t: i for i, op in enumerate(ops) for t in op.outputs}
    float_on_binary = sum(
        1
        for op in ops
        if op.name in KERNEL_OPS
        and op.name != BINARY_OP
        and _has_binarized_input(op, ops, producers)
    )
    counts = collections.Counter(op.name for op in ops)
    report = {
        "size_bytes": len(flatbuffer),
        "ops": dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))),
        "binary_ops": counts.get(BINARY_OP, 0),
        "float_ops_on_binary_input": float_on_binary,
    }
    if model is None:
        report["all_binary_converted"] = float_on_binary == 0
        return report
    pairs = _match_kernel_ops(ops, model)
    binary = [layer.name for layer, _ in pairs if is_binary_layer(layer)]
    converted = [
        layer.name
        for layer, op in pairs
        if is_binary_layer(layer) and op.name == BINARY_OP
    ]
    report.update(
        binary_layers=binary,
        converted=converted,
        not_converted=[name for name in binary if name not in converted],
        float_layers=[layer.name for layer, op in pairs if op.name != BINARY_OP],
        all_binary_converted=len(converted) == len(binary) and float_on_binary == 0,
    )
    return report


def check_lce_conversion(flatbuffer: bytes, model: tf.keras.Model) -> dict:
    """Raises unless every hidden binary layer of `model` became `LceBconv2d`.

    # Arguments
        flatbuffer: the converted flatbuffer.
        model: the Keras model it was converted from.

    # Returns
        The `lce_op_report` of the flatbuffer.

    # Raises
        ValueError: naming the binary layers that run as float ops.
    """
    report = lce_op_report(flatbuffer, model)
    if not report["all_binary_converted"]:
        missing = report["not_converted"]
        raise ValueError(
            f"{len(missing)} of {len(report['binary_layers'])} binary layers of "
            f"{model.name!r} did not become {BINARY_OP} ({', '.join(missing)}) and would "
            "run in float32; convert with zoo.export.convert_to_lce, which rewrites "
            "binary dense layers as 1x1 binary convolutions"
        )
    return report


def binary_layer_sizes(
    lce_flatbuffer: bytes, float_flatbuffer: bytes, model: tf.keras.Model
) -> list:
    """Bytes of each kernel layer in the LCE flatbuffer and in the float twin.

    A layer's bytes are those of the constant tensors its kernel op reads: the kernel
    and, folded into the same op by both converters, bias and batch normalization
    (LCE: per-channel multiplier and bias, or an int32 threshold per channel when the
    output is bit-packed for the next binary layer). A batch norm after a max-pooling is
    a separate op in both flatbuffers and is left out of both.

    # Arguments
        lce_flatbuffer: from `convert_to_lce(model)`.
        float_flatbuffer: from `float_twin_tflite(model)`.
        model: the Keras model both were converted from.

    # Returns
        One dict per kernel layer, in model order: `layer`, `binary` (a hidden binary
        layer, see `is_binary_layer`), `lce_op`, `lce_bytes`, `lce_kernel_bytes`,
        `float_bytes`, `float_kernel_bytes` and `ratio` (`float_bytes / lce_bytes`).

    # Raises
        ValueError: if either flatbuffer does not match `model`.
    """
    lce_pairs = _match_kernel_ops(_parse(lce_flatbuffer), model)
    float_pairs = _match_kernel_ops(_parse(float_flatbuffer), model)
    return [
        {
            "layer": layer.name,
            "binary": is_binary_layer(layer),
            "lce_op": lce_op.name,
            "lce_bytes": lce_op.constant_bytes,
            "lce_kernel_bytes": lce_op.kernel_bytes,
            "float_bytes": float_op.constant_bytes,
            "float_kernel_bytes": float_op.kernel_bytes,
            "ratio": float_op.constant_bytes / max(lce_op.constant_bytes, 1),
        }
        for (layer, lce_op), (_, float_op) in zip(lce_pairs, float_pairs)
    ]


# Running flatbuffers ----------------------------------------------------------------


def lce_interpreter(
    flatbuffer: bytes, *, num_threads: int = 1, use_indirect_bgemm: bool = False
):
    """Returns LCE's Python interpreter for `flatbuffer` (TFLite with LCE's ops).

    On x86 the pip wheel runs LCE's portable kernels: outputs are exact, speed is not
    representative of 64-bit ARM, where LCE's optimized kernels run.

    # Arguments
        flatbuffer: a flatbuffer from `convert_to_lce`.
        num_threads: interpreter threads.
        use_indirect_bgemm: use LCE's indirect BGEMM kernel for `LceBconv2d`.

    # Returns
        A `larq_compute_engine.tflite.python.interpreter.Interpreter`.

    # Raises
        ImportError: if Larq Compute Engine is not installed.
    """
    _lce()
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    return Interpreter(
        flatbuffer, num_threads=num_threads, use_indirect_bgemm=use_indirect_bgemm
    )


def _check_inputs(x: np.ndarray, expected: Sequence[int], what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != len(expected) or tuple(x.shape[1:]) != tuple(expected[1:]):
        raise ValueError(
            f"{what} takes inputs of shape (N, {', '.join(map(str, expected[1:]))}), got "
            f"{x.shape}; pass images of the shape the model was built for"
        )
    return x


def lce_predict(
    flatbuffer: bytes, x: np.ndarray, *, use_indirect_bgemm: bool = False
) -> np.ndarray:
    """Runs an LCE flatbuffer on `x`, one image at a time.

    # Arguments
        flatbuffer: a flatbuffer from `convert_to_lce`.
        x: float32 inputs, shape `(N, ...)` matching the model's input.
        use_indirect_bgemm: use LCE's indirect BGEMM kernel for `LceBconv2d`.

    # Returns
        The outputs (logits), shape `(N, num_classes)`.

    # Raises
        ValueError: if `x` does not match the flatbuffer's input shape.
    """
    interpreter = lce_interpreter(flatbuffer, use_indirect_bgemm=use_indirect_bgemm)
    x = _check_inputs(x, interpreter.input_shapes[0], "the flatbuffer")
    if not len(x):
        return np.zeros((0, *interpreter.output_shapes[0][1:]), np.float32)
    return np.asarray(interpreter.predict(x))


def verify_lce(
    flatbuffer: bytes,
    model: tf.keras.Model,
    x: np.ndarray,
    y: Optional[np.ndarray] = None,
    *,
    samples: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict:
    """Compares an LCE flatbuffer's predictions with the Keras model's, on real images.

    # Arguments
        flatbuffer: a flatbuffer from `convert_to_lce(model)`.
        model: the Keras model, run in inference mode.
        x: images, shape `(N, ...)` matching the model's input.
        y: integer labels, shape `(N,)`, or `None` (no accuracies).
        samples: compare on this many images, a class-stratified sample of `x` drawn
            with `seed` (`zoo.datasets.stratified_sample`; needs `y`); `None` or
            `samples >= N`: on every image.
        seed: the seed of that sample.
        batch_size: batch size of the Keras predictions (LCE runs one image at a time).

    # Returns
        A dict: `samples` (images compared); `total` (`N`); `seed` (the sample's seed,
        `None` when every image was compared); `argmax_agreement` (fraction of images
        on which both predict the same class); `keras_accuracy` and `lce_accuracy`
        (`None` without `y`); `max_abs_logit_diff` (largest |logit difference| over
        the images and classes).

    # Raises
        ValueError: if `x` or `y` do not match the model, or `samples` is not a
            positive integer or comes without `y`.
    """
    x = _check_inputs(x, model.inputs[0].shape, f"model {model.name!r}")
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(x),):
            raise ValueError(f"`y` should have shape ({len(x)},), got {y.shape}")
    if not len(x):
        raise ValueError("no images to verify on; pass at least one")
    total, sample_seed = len(x), None
    if samples is not None:
        samples = check_positive_int(samples, "samples")
        if y is None:
            raise ValueError(
                "`samples` draws a class-stratified sample and needs the labels `y`; "
                "pass `y`, or fewer images in `x`"
            )
        indices = stratified_sample(y, samples, seed=seed)
        if len(indices) < total:
            x, y, sample_seed = x[indices], y[indices], seed
    keras_logits = model.predict(x, batch_size=batch_size, verbose=0)
    lce_logits = lce_predict(flatbuffer, x)
    if lce_logits.shape != keras_logits.shape:
        raise ValueError(
            f"the flatbuffer outputs {lce_logits.shape[1:]} but model {model.name!r} "
            f"outputs {keras_logits.shape[1:]}; pass the model it was converted from"
        )
    keras_class, lce_class = keras_logits.argmax(-1), lce_logits.argmax(-1)
    return {
        "samples": int(len(x)),
        "total": int(total),
        "seed": sample_seed,
        "argmax_agreement": float(np.mean(keras_class == lce_class)),
        "keras_accuracy": None if y is None else float(np.mean(keras_class == y)),
        "lce_accuracy": None if y is None else float(np.mean(lce_class == y)),
        "max_abs_logit_diff": float(np.max(np.abs(keras_logits - lce_logits))),
    }
