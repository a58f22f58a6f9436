"""Binarized VGG networks for metaplastic training: VGG-16 and the paper's VGG-Small.

```python
model = vgg_small_meta()  # the paper's CIFAR-10 network, outputs logits
```
"""

from typing import Optional, Sequence, Union

import tensorflow as tf

from zoo import layers
from zoo.precision import DEFAULT_PRECISION, check_precision
from zoo.registry import register_model
from zoo.validation import check_real, check_units
from zoo.weights import WeightsType, check_weights, load_weights, pretrained_weights

POOL = "M"  # 2x2 max-pooling in a conv spec
ConvSpec = Sequence[Union[int, str]]

# Simonyan & Zisserman 2015, configuration D.
VGG16_CONVS = (
    64, 64, POOL,
    128, 128, POOL,
    256, 256, 256, POOL,
    512, 512, 512, POOL,
    512, 512, 512, POOL,
)  # fmt: skip
# The paper's CIFAR-10 network (Laborieux et al. 2021, stream CIFAR-10 experiment).
VGG_SMALL_CONVS = (128, 128, POOL, 256, 256, POOL, 512, 512, POOL)


def _vgg(
    convs: ConvSpec,
    *,
    input_shape: Optional[Sequence[int]],
    input_tensor: Optional[tf.Tensor],
    num_classes: int,
    dense_units: Sequence[int],
    dropout: float,
    weights: WeightsType,
    pretrained: bool,
    kernel_initializer: str,
    precision: str,
    name: str,
    factory: str,
) -> tf.keras.Model:
    precision = check_precision(precision)
    dense_units = check_units(dense_units, "dense_units")
    dropout = check_real(dropout, "dropout", low=0.0, high=1.0, high_open=True)
    weights = pretrained_weights(weights, pretrained=pretrained, factory=factory)
    input_shape = layers.validate_arguments(
        input_shape=input_shape,
        input_tensor=input_tensor,
        num_classes=num_classes,
        ndim=3,
        min_size=2 ** convs.count(POOL),
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
        x = layers.binary_conv(
            filters,
            first=depth == 1,
            kernel_initializer=kernel_initializer,
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
    kernel_initializer: str = "glorot_uniform",
    precision: str = DEFAULT_PRECISION,
    name: str = "vgg16_meta",
) -> tf.keras.Model:
    """Instantiates a metaplastic binarized VGG-16.

    13 binary 3x3 convolutions 64-64-M-128-128-M-256-256-256-M-512-512-512-M-512-512-512-M
    (M: 2x2 max-pooling), then a binary dense head `dense_units` + `num_classes`. Every
    binary layer is followed by batch normalization (conv -> max-pool -> batch norm), the
    output layer included, and the model returns logits (no softmax). The first
    convolution takes the real-valued pixels and is zero-padded; the others take binary
    (`"ste_sign"`) inputs and are padded with +1, as Larq Compute Engine requires.

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
        kernel_initializer: initializer of the latent binary kernels.
        precision: `"float32"`, or `"bf16"`: the binary layers compute in bfloat16
            (latent kernels, batch normalization and logits stay float32; see
            `zoo.precision`).
        name: model name.

    # Returns
        A built `tf.keras.Model`.

    # Raises
        ValueError: in case of invalid `input_shape`, `input_tensor`, `num_classes`,
            `dense_units`, `dropout`, `weights`, `pretrained` or `precision`, or
            arguments that differ from the pretrained model's.
    """
    return _vgg(
        VGG16_CONVS,
        input_shape=input_shape,
        input_tensor=input_tensor,
        num_classes=num_classes,
        dense_units=dense_units,
        dropout=dropout,
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
    weights: WeightsType = None,
    pretrained: bool = False,
    kernel_initializer: str = "glorot_uniform",
    precision: str = DEFAULT_PRECISION,
    name: str = "vgg_small_meta",
) -> tf.keras.Model:
    """Instantiates VGG-Small, the paper's CIFAR-10 network (Laborieux et al. 2021).

    The binarized network of the paper's stream CIFAR-10 experiment: binary 3x3
    convolutions 128-128-M-256-256-M-512-512-M (M: 2x2 max-pooling), then binary dense
    layers 2048-2048-`num_classes` with dropout 0.5 before each of them. Every binary
    layer is followed by batch normalization (conv -> max-pool -> batch norm), the output
    layer included, and the model returns logits (no softmax). The first convolution
    takes the real-valued pixels and is zero-padded; the others take binary
    (`"ste_sign"`) inputs and are padded with +1, as Larq Compute Engine requires.

    Layers: `conv_1`/`bn_1` ... `conv_6`/`bn_6` (with `pool_2`, `pool_4`, `pool_6`),
    `flatten`, `dense_7`/`bn_7`, `dense_8`/`bn_8`, `dense_out`/`bn_out`, preceded by
    `dropout_7`, `dropout_8`, `dropout_out` (when `dropout > 0`).

    # Arguments
        input_shape: shape of one image, `(height, width, channels)`; ignored when
            `input_tensor` is given. Height and width must be at least 8.
        input_tensor: optional Keras tensor (e.g. the output of `tf.keras.Input()`) to
            use as the model's input.
        num_classes: number of output logits.
        dense_units: widths of the hidden binary dense layers of the head, at least one.
        dropout: dropout rate before each binary dense layer of the head (0: none).
        weights: `None` (random initialization), a path to a weights file (`.h5` or a
            TensorFlow checkpoint prefix) to load, or a pretrained model name (see
            `zoo.pretrained`; its sha256-verified weights are copied in).
        pretrained: load the factory's default pretrained model; VGG-Small has none
            yet, so `True` raises (pass a registered name as `weights`).
        kernel_initializer: initializer of the latent binary kernels.
        precision: `"float32"`, or `"bf16"`: the binary layers compute in bfloat16
            (latent kernels, batch normalization and logits stay float32; see
            `zoo.precision`).
        name: model name.

    # Returns
        A built `tf.keras.Model`.

    # Raises
        ValueError: in case of invalid `input_shape`, `input_tensor`, `num_classes`,
            `dense_units`, `dropout`, `weights`, `pretrained` or `precision`, or
            arguments that differ from the pretrained model's.
    """
    return _vgg(
        VGG_SMALL_CONVS,
        input_shape=input_shape,
        input_tensor=input_tensor,
        num_classes=num_classes,
        dense_units=dense_units,
        dropout=dropout,
        weights=weights,
        pretrained=pretrained,
        kernel_initializer=kernel_initializer,
        precision=precision,
        name=name,
        factory="vgg_small_meta",
    )
