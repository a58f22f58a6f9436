"""Building blocks and argument checks shared by every model in the zoo.

Metaplasticity (Laborieux et al. 2021) reads the magnitude of each latent weight, so the
binary layers here never clip their latent weights: the kernel quantizer is
`SteSign(clip_value=None)` (gradients pass even where |W| > 1) and there is no
`kernel_constraint`. Activations are binarized with the usual `"ste_sign"` (clip at 1),
except in the first layer, which sees the real-valued input.

Every builder takes a `precision` (see `zoo.precision`): with `"bf16"` the binary
layers, their quantizers and the layers between them (pooling, flatten, dropout) compute
in bfloat16 with float32 variables. Batch normalization and the first layer stay float32
in every precision: the first layer multiplies real-valued pixels, not +-1 by +-1, and
rounding them to bfloat16 flips the signs of some of its outputs near zero; in float32
it keeps a bf16 model's forward pass equal to the float32 one, at no measured cost in
speed (it is ~0.6 % of VGG-16's multiply-adds).

Layers are named by their depth `i` (1, 2, ... counting binary layers from the input):
`conv_i` or `dense_i`, then `pool_i` (if any) and `bn_i`; the output layer is `dense_out`
with `bn_out`; the dropout before `dense_i` is `dropout_i` (`dropout_out` before the output).

Kernel initializers may be given as anything Keras accepts (a name such as
`"glorot_uniform"`, a config dict, an `Initializer` instance or a callable); every layer
gets its own initializer (`layer_initializer`), so an instance passed once never hands
several layers the same values.

```python
x = tf.keras.Input((28, 28, 1))
x = tf.keras.layers.Flatten()(x)
x = binary_dense(256, first=True, name="dense_1")(x)
x = batch_norm(name="bn_1")(x)
```
"""

import contextlib
import logging
from types import MappingProxyType
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Union

import larq as lq
import tensorflow as tf

from zoo.precision import (
    DEFAULT_PRECISION,
    check_precision,
    layer_policy,
    normalization_policy,
)
from zoo.validation import check_positive_int, is_positive_int

# Kernel binarization: STE without clipping, so no latent weight is ever starved.
KERNEL_QUANTIZER_CONFIG = MappingProxyType({"clip_value": None})
# Activation binarization of every binary layer but the first one (STE clipped at 1).
INPUT_QUANTIZER = "ste_sign"
# PyTorch's BatchNorm defaults, as in the paper's reference code (torch momentum=0.1).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

_STARVED_WEIGHTS_WARNING = "may result in starved weights"
# What a factory accepts as `kernel_initializer`: anything `tf.keras.initializers.get`
# accepts (a name, a `{"class_name": ..., "config": ...}` dict, an instance, a callable).
KernelInitializer = Union[
    str, Dict[str, Any], tf.keras.initializers.Initializer, Callable[..., tf.Tensor]
]
PADDINGS = ("same", "valid")


class _DropStarvedWeightsWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _STARVED_WEIGHTS_WARNING not in record.getMessage()


@contextlib.contextmanager
def silence_starved_weights_warning() -> Iterator[None]:
    """Hides larq's "starved weights" warning while binary layers are constructed.

    larq warns whenever a binary kernel quantizer comes without a `kernel_constraint`;
    here that is deliberate (metaplasticity needs unclipped latent weights). Only that
    warning is dropped, and only inside the `with` block.
    """
    logger = logging.getLogger("larq.layers_base")
    log_filter = _DropStarvedWeightsWarning()
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)


def binary_kernel_quantizer(
    *, precision: str = DEFAULT_PRECISION
) -> lq.quantizers.SteSign:
    """Returns a new kernel quantizer: sign forward, unclipped straight-through backward.

    # Arguments
        precision: the precision of the layer it quantizes the kernel of (a larq
            quantizer is a Keras layer, which computes in its own dtype policy).
    """
    if check_precision(precision) == "float32":
        return lq.quantizers.SteSign(**KERNEL_QUANTIZER_CONFIG)
    return lq.quantizers.SteSign(
        **KERNEL_QUANTIZER_CONFIG, dtype=layer_policy(precision)
    )


def check_initializer(
    initializer: KernelInitializer, name: str = "kernel_initializer"
) -> KernelInitializer:
    """Checks that Keras can make an initializer of `initializer`, and returns it.

    # Arguments
        initializer: a Keras initializer identifier: a name, a config dict, an
            `Initializer` instance or a callable `(shape, dtype) -> tensor`.
        name: the argument's name, for the error message.

    # Returns
        `initializer`, unchanged.

    # Raises
        ValueError: if Keras does not know `initializer` (`None` included).
    """
    try:
        known = initializer is not None and tf.keras.initializers.get(initializer)
    except (ValueError, TypeError):
        known = False
    if not known:
        raise ValueError(
            f"{name} must be a Keras initializer (a name such as 'glorot_uniform', a "
            f"config dict, an Initializer instance or a callable), got {initializer!r}."
        )
    return initializer


def layer_initializer(
    initializer: KernelInitializer, *, seed_offset: int = 0
) -> KernelInitializer:
    """Returns an initializer for one layer, never shared with another layer.

    Keras hands the same values to every call of one *unseeded* `Initializer` instance
    (and warns), so an instance is rebuilt from its config for each layer; a seeded one
    gets `seed + seed_offset`, so that layers with different offsets get different (and
    still reproducible) values. Names and config dicts already give a new instance per
    layer and are returned unchanged, as are callables that are not `Initializer`s and
    instances that cannot be rebuilt from their config.

    # Arguments
        initializer: a Keras initializer identifier (see `check_initializer`).
        seed_offset: added to the seed of a seeded `Initializer` instance (pass each
            layer's depth, for instance).

    # Returns
        An initializer identifier for `kernel_initializer=`.
    """
    if not isinstance(initializer, tf.keras.initializers.Initializer):
        return initializer
    config = dict(initializer.get_config())
    if config.get("seed") is not None:
        config["seed"] = int(config["seed"]) + seed_offset
    try:
        return type(initializer).from_config(config)
    except (TypeError, ValueError):  # a custom initializer without a usable config
        return initializer


def _input_quantizer(first: bool, precision: str):
    if first:
        return None
    if precision == "float32":
        return INPUT_QUANTIZER
    return lq.quantizers.SteSign(clip_value=1.0, dtype=layer_policy(precision))


def _binary_kwargs(
    first: bool, kernel_initializer: KernelInitializer, precision: str
) -> dict:
    precision = check_precision(precision)
    if first:  # it multiplies real pixels: float32 in every precision
        precision = "float32"
    kwargs = dict(
        input_quantizer=_input_quantizer(first, precision),
        kernel_quantizer=binary_kernel_quantizer(precision=precision),
        kernel_constraint=None,
        kernel_initializer=layer_initializer(kernel_initializer),
        use_bias=False,
    )
    if precision != "float32":
        kwargs["dtype"] = layer_policy(precision)
    return kwargs


def binary_dense(
    units: int,
    *,
    first: bool = False,
    kernel_initializer: KernelInitializer = "glorot_uniform",
    precision: str = DEFAULT_PRECISION,
    name: Optional[str] = None,
) -> lq.layers.QuantDense:
    """Returns a binary dense layer (binary kernel, binary input unless `first`, no bias).

    # Arguments
        units: number of output units.
        first: whether the layer takes the real-valued network input; its input is then
            left unquantized.
        kernel_initializer: initializer of the latent kernel, any Keras initializer
            identifier (an `Initializer` instance is copied, see `layer_initializer`).
        precision: `"float32"`, or `"bf16"` to compute in bfloat16 (the latent kernel
            stays a float32 variable); a `first` layer computes in float32 in every
            precision.
        name: layer name.

    # Returns
        A `larq.layers.QuantDense` layer.
    """
    with silence_starved_weights_warning():
        return lq.layers.QuantDense(
            units, **_binary_kwargs(first, kernel_initializer, precision), name=name
        )


def binary_conv(
    filters: int,
    *,
    first: bool = False,
    kernel_size: int = 3,
    padding: str = "same",
    pad_values: Optional[float] = None,
    kernel_initializer: KernelInitializer = "glorot_uniform",
    precision: str = DEFAULT_PRECISION,
    name: Optional[str] = None,
) -> lq.layers.QuantConv2D:
    """Returns a binary convolution (binary kernel, binary input unless `first`).

    By default a "same" convolution whose binarized inputs are padded with +1
    (`pad_values=1.0`): the padded input stays binary, and Larq Compute Engine (0.16)
    lets such a convolution write its output bit-packed for the next binary layer,
    which it does not for one that zero-pads (that one writes float32 output, then
    quantized by a separate `LceQuantize` op; the results are the same). The first
    convolution sees real-valued pixels and is zero-padded (`pad_values=0.0`).

    # Arguments
        filters: number of output channels.
        first: whether the layer takes the real-valued network input; its input is then
            left unquantized and, by default, zero-padded.
        kernel_size: height and width of the kernel.
        padding: `"same"` (the output keeps the input's height and width) or `"valid"`
            (no padding: `kernel_size - 1` rows and columns fewer).
        pad_values: the value a `"same"` convolution pads its (binarized) input with;
            `None`: 0.0 for a `first` layer, else 1.0. Ignored with `"valid"`.
        kernel_initializer: initializer of the latent kernel, any Keras initializer
            identifier (an `Initializer` instance is copied, see `layer_initializer`).
        precision: `"float32"`, or `"bf16"` to compute in bfloat16 (the latent kernel
            stays a float32 variable); a `first` layer computes in float32 in every
            precision.
        name: layer name.

    # Returns
        A `larq.layers.QuantConv2D` layer.

    # Raises
        ValueError: if `padding` is neither `"same"` nor `"valid"`.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}.")
    if padding == "valid":
        pad_values = 0.0
    elif pad_values is None:
        pad_values = 0.0 if first else 1.0
    with silence_starved_weights_warning():
        return lq.layers.QuantConv2D(
            filters,
            kernel_size,
            padding=padding,
            pad_values=float(pad_values),
            **_binary_kwargs(first, kernel_initializer, precision),
            name=name,
        )


def batch_norm(
    *, name: Optional[str] = None, affine: bool = True
) -> tf.keras.layers.BatchNormalization:
    """Returns the batch normalization that follows every binary layer (PyTorch-like).

    It computes in float32 in every precision (`zoo.precision.normalization_policy`):
    variables, batch statistics and output, a bfloat16 input being cast up.

    # Arguments
        name: layer name.
        affine: learn a scale gamma and an offset beta (Keras' `scale` and `center`);
            `False` only normalizes, as PyTorch's `BatchNorm1d(affine=False)` of the
            paper's stream network.

    # Returns
        A `tf.keras.layers.BatchNormalization`.
    """
    return tf.keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        center=affine,
        scale=affine,
        dtype=normalization_policy(),
        name=name,
    )


def layer_kwargs(precision: str) -> dict:
    """Keyword arguments of the parameter-free layers between binary layers (pooling,
    flatten, dropout): in bf16 they compute in bfloat16 too, so that no cast is
    inserted between a binary layer and the next.

    # Arguments
        precision: `"float32"` or `"bf16"`.

    # Returns
        `{}` for float32, else `{"dtype": <mixed_bfloat16 policy>}`.
    """
    if check_precision(precision) == "float32":
        return {}
    return {"dtype": layer_policy(precision)}


def binary_dense_stack(
    x: tf.Tensor,
    hidden_units: Sequence[int],
    *,
    num_classes: int,
    first_index: int,
    first: bool = False,
    dropout: float = 0.0,
    input_dropout: bool = True,
    kernel_initializer: KernelInitializer = "glorot_uniform",
    precision: str = DEFAULT_PRECISION,
    batch_norm_affine: bool = True,
) -> tf.Tensor:
    """Applies binary dense + batch norm blocks, ending with the logits layer.

    # Arguments
        x: flat input tensor.
        hidden_units: units of the hidden binary dense layers.
        num_classes: units of the output layer.
        first_index: depth index of the first dense layer (names `dense_{first_index}`).
        first: whether the first dense layer takes the real-valued network input.
        dropout: dropout rate; 0 adds no dropout layer. The dropout before `dense_i` is
            `dropout_i` (`dropout_out` before the output layer).
        input_dropout: whether a dropout also precedes the first dense layer (on `x`
            itself); `False` puts one only between dense layers, after each hidden
            layer's batch norm (as in the paper's VGG-Small).
        kernel_initializer: initializer of the latent kernels (each layer gets its own,
            see `layer_initializer`; a seeded instance gets the seed + the layer's
            depth index).
        precision: `"float32"` or `"bf16"` (see `binary_dense`); the logits are float32.
        batch_norm_affine: whether the batch normalizations learn gamma and beta (see
            `batch_norm`).

    # Returns
        The logits: batch-normalized outputs of `dense_out`, no softmax.
    """
    tags = [str(first_index + i) for i in range(len(hidden_units))] + ["out"]
    for i, (units, tag) in enumerate(zip([*hidden_units, num_classes], tags)):
        if dropout and (input_dropout or i > 0):
            x = tf.keras.layers.Dropout(
                dropout, name=f"dropout_{tag}", **layer_kwargs(precision)
            )(x)
        x = binary_dense(
            units,
            first=first and i == 0,
            kernel_initializer=layer_initializer(
                kernel_initializer, seed_offset=first_index + i
            ),
            precision=precision,
            name=f"dense_{tag}",
        )(x)
        x = batch_norm(name=f"bn_{tag}", affine=batch_norm_affine)(x)
    return x


def _is_valid_shape(shape, ndim: Optional[int], min_size: int) -> bool:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not shape:
        return False
    if ndim is not None and len(shape) != ndim:
        return False
    if not all(is_positive_int(d) for d in shape):
        return False
    spatial = shape[:-1] if ndim is not None else shape
    return all(d >= min_size for d in spatial)


def validate_arguments(
    *,
    input_shape: Optional[Sequence[int]],
    input_tensor: Optional[tf.Tensor],
    num_classes: int,
    ndim: Optional[int] = None,
    min_size: int = 1,
) -> tuple:
    """Checks the arguments every factory shares, but `weights` (see `zoo.weights`).

    # Arguments
        input_shape: shape of one sample, without the batch axis; ignored when
            `input_tensor` is given.
        input_tensor: optional Keras tensor (e.g. the output of `tf.keras.Input()`) to
            build the model on; its shape replaces `input_shape`.
        num_classes: number of output logits.
        ndim: required length of the sample shape, if any (the last axis is channels).
        min_size: minimum of every spatial dimension (all but the channels when `ndim`
            is given, otherwise every dimension).

    # Returns
        The sample shape the model will be built for, as a tuple of ints.

    # Raises
        ValueError: if any argument is invalid.
    """
    check_positive_int(num_classes, "num_classes")
    if input_tensor is not None:
        try:
            is_keras_tensor = tf.keras.backend.is_keras_tensor(input_tensor)
        except ValueError:
            is_keras_tensor = False
        if not is_keras_tensor:
            raise ValueError(
                f"`input_tensor` should be a Keras tensor (e.g. from `tf.keras.Input`), "
                f"got {input_tensor!r}."
            )
        shape = tuple(input_tensor.shape[1:])
        source = f"`input_tensor` has shape {shape}"
    else:
        shape = input_shape
        source = f"`input_shape` is {input_shape!r}"

    if not _is_valid_shape(shape, ndim, min_size):
        expected = (
            f"{ndim} positive ints" if ndim else "a non-empty tuple of positive ints"
        )
        if min_size > 1:
            expected += f" with height and width >= {min_size}"
        raise ValueError(f"{source}, expected {expected}.")
    return tuple(int(d) for d in shape)


def model_input(
    input_shape: Sequence[int], input_tensor: Optional[tf.Tensor] = None
) -> tuple:
    """Returns `(inputs, x)`: the model's inputs and the tensor the network starts from.

    # Arguments
        input_shape: validated shape of one sample, used when `input_tensor` is `None`.
        input_tensor: optional Keras tensor; the model's inputs are then its source
            `tf.keras.Input`(s), so it may be the output of earlier layers.

    # Returns
        A tuple `(inputs, x)` for `tf.keras.Model(inputs=inputs, ...)`.
    """
    if input_tensor is None:
        x = tf.keras.Input(shape=tuple(input_shape), name="input")
        return x, x
    inputs = tf.keras.utils.get_source_inputs(input_tensor)
    return (inputs[0] if len(inputs) == 1 else inputs), input_tensor
