"""Binarized VGG networks for metaplastic training: VGG-16 and the paper's VGG-Small.

```python
model = vgg_small_meta()  # the paper's CIFAR-10 network, outputs logits
```
"""

from typing import Collection, Optional, Sequence, Union

import tensorflow as tf

from zoo import layers
from zoo.layers import KernelInitializer
from zoo.precision import DEFAULT_PRECISION, check_precision
from zoo.registry import register_model
from zoo.validation import check_choice, check_real, check_units
from zoo.weights import WeightsType, check_weights, load_weights, pretrained_weights

POOL = "M"  # 2x2 max-pooling in a conv spec
ConvSpec = Sequence[Union[int, str]]
KERNEL_SIZE = 3

# Simonyan & Zisserman 2015, configuration D.
VGG16_CONVS = (
    64, 64, POOL,
    128, 128, POOL,
    256, 256, 256, POOL,
    512, 512, 512, POOL,
    512, 512, 512, POOL,
)  # fmt: skip
# The paper's CIFAR-10 network (Laborieux et al. 2021, stream CIFAR-10 experiment; the
# reference code's `ConvBNN`). Its 6th convolution is unpadded: 8x8 -> 6x6, pooled to
# 3x3x512 = 4,608 features into the classifier.
VGG_SMALL_CONVS = (128, 128, POOL, 256, 256, POOL, 512, 512, POOL)
VGG_SMALL_UNPADDED = (6,)  # depths of its "valid" convolutions


# The reference script's initialisation: `model.apply(normal_init)`, PyTorch's
# `xavier_normal_` on every binary layer, N(0, 2 / (fan_in + fan_out)), untruncated. Its
# README's `--init gauss --init-width 0.007` reaches a constructor that ignores them.
def _xavier_normal() -> tf.keras.initializers.Initializer:
    return tf.keras.initializers.VarianceScaling(1.0, "fan_avg", "untruncated_normal")


# Values a "same" binary convolution may pad its binarized input with.
PAD_VALUES = (0.0, 1.0)


def _fits(size: int, convs: ConvSpec, unpadded: Collection[int]) -> bool:
    """Whether a spatial size survives the convolutions and poolings of `convs`."""
    depth = 0
    for item in convs:
        if item == POOL:
            size //= 2
        else:
            depth += 1
            if depth in unpadded:
                size -= KERNEL_SIZE - 1
        if size < 1:
            return False
    return True


def min_input_size(convs: ConvSpec, unpadded: Collection[int] = ()) -> int:
    """The smallest input height (and width) a VGG of `convs` accepts.

    # Arguments
        convs: filters of the convolutions, with `POOL` for each 2x2 max-pooling.
        unpadded: depths (1 = first convolution) of the unpadded ("valid") ones.

    # Returns
        `2 ** pools` when every convolution is padded (32 for VGG-16); 16 for VGG-Small,
        whose 6th convolution takes 4x4 to 2x2 before the last pooling.
    """
    size = 1
    while not _fits(size, convs, unpadded):
        size += 1
    return size


def _vgg(
    convs: ConvSpec,
    *,
    input_shape: Optional[Sequence[int]],
    input_tensor: Optional[tf.Tensor],
    num_classes: int,
    dense_units: Sequence[int],
    dropout: float,
    input_dropout: bool,
    unpadded: Collection[int],
    pad_values: float,
    weights: WeightsType,
    pretrained: bool,
    kernel_initializer: KernelInitializer,
    precision: str,
    name: str,
    factory: str,
) -> tf.keras.Model:
    precision = check_precision(precision)
    dense_units = check_units(dense_units, "dense_units")
    dropout = check_real(dropout, "dropout", low=0.0, high=1.0, high_open=True)
    pad_values = check_choice(
        check_real(pad_values, "pad_values"), "pad_values", PAD_VALUES
    )
    kernel_initializer = layers.check_initializer(kernel_initializer)
    weights = pretrained_weights(weights, pretrained=pretrained, factory=factory)
    input_shape = layers.validate_arguments(
        input_shape=input_shape,
        input_tensor=input_tensor,
        num_classes=num_classes,
        ndim=3,
        min_size=min_input_size(convs, unpadded),
    )
    check_weights(
        weights,
        factory=factory,
        input_shape=input_shape,
        num_classes=num_classes,
        architecture={"dense_units": dense_units},
    )
    inputs, x = layers.model_input(input_shape, input_tensor)

    depth = 0
    for i, filters in enumerate(convs):
        if filters == POOL:
            continue
        depth += 1
        first = depth == 1
        x = layers.binary_conv(
            filters,
            first=first,
            kernel_size=KERNEL_SIZE,
            padding="valid" if depth in unpadded else "same",
            pad_values=0.0 if first else pad_values,
            kernel_initializer=layers.layer_initializer(
                kernel_initializer, seed_offset=depth
            ),
            precision=precision,
            name=f"conv_{depth}",
        )(x)
        if i + 1 < len(convs) and convs[i + 1] == POOL:
            x = tf.keras.layers.MaxPool2D(
                2, name=f"pool_{depth}", **layers.layer_kwargs(precision)
            )(x)
        x = layers.batch_norm(name=f"bn_{depth}")(x)

    x = tf.keras.layers.Flatten(name="flatten", **layers.layer_kwargs(precision))(x)
    x = layers.binary_dense_stack(
        x,
        dense_units,
        num_classes=num_classes,
        first_index=depth + 1,
        dropout=dropout,
        input_dropout=input_dropout,
        kernel_initializer=kernel_initializer,
        precision=precision,
    )

    model = tf.keras.Model(inputs=inputs, outputs=x, name=name)
    return load_weights(model, weights)


@register_model(architecture=("dense_units",), default_pretrained="vgg16_meta_cifar10")
def vgg16_meta(
    *,  # Keyword arguments only
    input_shape: Optional[Sequence[int]] = (32, 32, 3),
    input_tensor: Optional[tf.Tensor] = None,
    num_classes: int = 10,
    dense_units: Sequence[int] = (512, 512),
    dropout: float = 0.0,
    weights: WeightsType = None,
    pretrained: bool = False,
    kernel_initializer: KernelInitializer = "glorot_uniform",
    precision: str = DEFAULT_PRECISION,
    name: str = "vgg16_meta",
) -> tf.keras.Model:
    """Instantiates a metaplastic binarized VGG-16.

    13 binary 3x3 convolutions 64-64-M-128-128-M-256-256-256-M-512-512-512-M-512-512-512-M
    (M: 2x2 max-pooling), then a binary dense head `dense_units` + `num_classes`. Every
    binary layer is followed by batch normalization (conv -> max-pool -> batch norm), the
    output layer included, and the model returns logits (no softmax). The first
    convolution takes the real-valued pixels and is zero-padded; the others take binary
    (`"ste_sign"`) inputs and are padded with +1, so that Larq Compute Engine writes
    every binary layer's output bit-packed (the pretrained weights assume this padding).

    Layers: `conv_1`/`bn_1` ... `conv_13`/`bn_13` (with `pool_2`, `pool_4`, `pool_7`,
    `pool_10`, `pool_13`), `flatten`, `dense_14`/`bn_14`, `dense_15`/`bn_15`,
    `dense_out`/`bn_out` (`dropout_14`, `dropout_15`, `dropout_out` when `dropout > 0`).

    # Arguments
        input_shape: shape of one image, `(height, width, channels)`; ignored when
            `input_tensor` is given. Height and width must be at least 32.
        input_tensor: optional Keras tensor (e.g. the output of `tf.keras.Input()`) to
            use as the model's input.
        num_classes: number of output logits.
        dense_units: widths of the hidden binary dense layers of the head, at least one.
        dropout: dropout rate before each binary dense layer of the head (0: none).
        weights: `None` (random initialization), a path to a weights file (`.h5` or a
            TensorFlow checkpoint prefix) to load, or a pretrained model name (see
            `zoo.pretrained`; its sha256-verified weights are copied in).
        pretrained: load the default pretrained model, `"vgg16_meta_cifar10"`; the
            other arguments must then be that model's (32x32x3 inputs, 10 classes,
            `dense_units=(512, 512)`).
        kernel_initializer: initializer of the latent binary kernels: any Keras
            initializer identifier (name, config dict, `Initializer` instance or
            callable); each layer gets its own copy of an instance (a seeded one with
            the seed + the layer's depth).
        precision: `"float32"`, or `"bf16"`: the binary layers compute in bfloat16
            (latent kernels, batch normalization and logits stay float32; see
            `zoo.precision`).
        name: model name.

    # Returns
        A built `tf.keras.Model`.

    # Raises
        ValueError: in case of invalid `input_shape`, `input_tensor`, `num_classes`,
            `dense_units`, `dropout`, `weights`, `pretrained`, `kernel_initializer` or
            `precision`, or arguments that differ from the pretrained model's.
    """
    return _vgg(
        VGG16_CONVS,
        input_shape=input_shape,
        input_tensor=input_tensor,
        num_classes=num_classes,
        dense_units=dense_units,
        dropout=dropout,
        input_dropout=True,
        unpadded=(),
        pad_values=1.0,
        weights=weights,
        pretrained=pretrained,
        kernel_initializer=kernel_initializer,
        precision=precision,
        name=name,
        factory="vgg16_meta",
    )


@register_model(architecture=("dense_units",))
def vgg_small_meta(
    *,  # Keyword arguments only
    input_shape: Optional[Sequence[int]] = (32, 32, 3),
    input_tensor: Optional[tf.Tensor] = None,
    num_classes: int = 10,
    dense_units: Sequence[int] = (2048, 2048),
    dropout: float = 0.5,
    pad_values: float = 0.0,
    weights: WeightsType = None,
    pretrained: bool = False,
    kernel_initializer: Optional[KernelInitializer] = None,
    precision: str = DEFAULT_PRECISION,
    name: str = "vgg_small_meta",
) -> tf.keras.Model:
    """Instantiates VGG-Small, the paper's CIFAR-10 network (Laborieux et al. 2021).

    The binarized network of the paper's stream CIFAR-10 experiment (Fig. 4b), as the
    reference code's `ConvBNN` builds it: binary 3x3 convolutions
    128-128-M-256-256-M-512-512-M (M: 2x2 max-pooling) of which the 6th is unpadded
    (8x8 -> 6x6 -> pooled 3x3 for 32x32 images: 3 * 3 * 512 = 4,608 features), then
    binary dense layers 2048-2048-`num_classes`. Every binary layer is followed by batch
    normalization (conv -> max-pool -> batch norm), the output layer included, and the
    model returns logits (no softmax). Dropout (`dropout`, 0.5 by default) follows the
    batch normalization of each hidden dense layer, never the flattened features (none
    before `dense_7`).

    Padding: the first convolution takes the real-valued pixels and is zero-padded;
    convolutions 2 to 5 take binary (`"ste_sign"`) inputs and pad them with
    `pad_values`: zeros by default, as the reference code (PyTorch pads the binarized
    input with zeros). Larq Compute Engine 0.16 converts these zero-padded convolutions
    to its bit-packed `LceBconv2d` and reproduces the Keras outputs (measured with
    random weights: same logits to 6e-5, same classes), but an `LceBconv2d` that
    zero-pads does not write
    bit-packed output: `conv_3` and `conv_5`, the two convolutions followed by another
    binary layer without pooling in between, then write float32 outputs and LCE adds a
    `LceQuantize` op after each (6 instead of 4). `pad_values=1.0` pads with +1
    instead, which LCE bit-packs throughout, but it is another network: at every
    border output, the kernel weights that fall on the padding add their signs, where
    zeros add nothing.

    Initialisation: by default the latent binary kernels are drawn as the reference
    script draws them, with PyTorch's `xavier_normal_` (`model.apply(normal_init)`):
    normal, untruncated, of variance 2 / (fan_in + fan_out),
    `tf.keras.initializers.VarianceScaling(1.0, "fan_avg", "untruncated_normal")`. The
    reference README's `--init gauss --init-width 0.007` reach a constructor that
    ignores them; pass `kernel_initializer=tf.keras.initializers.RandomNormal(
    stddev=0.007)` for that instead.

    Layers: `conv_1`/`bn_1` ... `conv_6`/`bn_6` (with `pool_2`, `pool_4`, `pool_6`),
    `flatten`, `dense_7`/`bn_7`, `dense_8`/`bn_8`, `dense_out`/`bn_out`. The dropout
    before `dense_i` is `dropout_i`: `dropout_8` (after `bn_7`) and `dropout_out`
    (after `bn_8`) with the default two hidden layers, when `dropout > 0`.

    # Arguments
        input_shape: shape of one image, `(height, width, channels)`; ignored when
            `input_tensor` is given. Height and width must be at least 16.
        input_tensor: optional Keras tensor (e.g. the output of `tf.keras.Input()`) to
            use as the model's input.
        num_classes: number of output logits.
        dense_units: widths of the hidden binary dense layers of the head, at least one.
        dropout: dropout rate after the batch normalization of each hidden dense layer,
            i.e. before every dense layer but the first (0: none).
        pad_values: what convolutions 2 to 5 pad their binarized inputs with: `0.0`
            (zeros, the reference code) or `1.0` (+1, see above).
        weights: `None` (random initialization), a path to a weights file (`.h5` or a
            TensorFlow checkpoint prefix) to load, or a pretrained model name (see
            `zoo.pretrained`; its sha256-verified weights are copied in).
        pretrained: load the factory's default pretrained model; VGG-Small has none
            yet, so `True` raises (pass a registered name as `weights`).
        kernel_initializer: initializer of the latent binary kernels: any Keras
            initializer identifier (name, config dict, `Initializer` instance or
            callable); each layer gets its own copy of an instance (a seeded one with
            the seed + the layer's depth). `None`: the reference's Xavier normal (see
            above), new for each layer.
        precision: `"float32"`, or `"bf16"`: the binary layers compute in bfloat16
            (latent kernels, batch normalization and logits stay float32; see
            `zoo.precision`).
        name: model name.

    # Returns
        A built `tf.keras.Model`.

    # Raises
        ValueError: in case of invalid `input_shape`, `input_tensor`, `num_classes`,
            `dense_units`, `dropout`, `pad_values`, `weights`, `pretrained`,
            `kernel_initializer` or `precision`, or arguments that differ from the
            pretrained model's.
    """
    if kernel_initializer is None:
        kernel_initializer = _xavier_normal()
    return _vgg(
        VGG_SMALL_CONVS,
        input_shape=input_shape,
        input_tensor=input_tensor,
        num_classes=num_classes,
        dense_units=dense_units,
        dropout=dropout,
        input_dropout=False,
        unpadded=VGG_SMALL_UNPADDED,
        pad_values=pad_values,
        weights=weights,
        pretrained=pretrained,
        kernel_initializer=kernel_initializer,
        precision=precision,
        name=name,
        factory="vgg_small_meta",
    )
