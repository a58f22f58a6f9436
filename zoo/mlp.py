"""The binarized MLP of Laborieux et al. 2021 (permuted-MNIST experiments), and its
full-precision counterpart of the same shape (the paper's comparison, Fig. 2f).

```python
model = mlp_meta(hidden_units=(1024, 1024))  # 784-1024-1024-10, outputs logits
reference = mlp_float(hidden_units=(1024, 1024))  # same shape, float weights, ReLU
```
"""

from typing import Optional, Sequence

import tensorflow as tf

from zoo import layers
from zoo.precision import DEFAULT_PRECISION, check_precision
from zoo.registry import register_model
from zoo.validation import check_choice, check_units
from zoo.weights import WeightsType, check_weights, load_weights, pretrained_weights

# The paper's MLP for permuted MNIST: 784-1024-1024-10 (Laborieux et al. 2021).
DEFAULT_HIDDEN_UNITS = (1024, 1024)
# The reference code's initialisation (`--init uniform --init-width 0.1`): uniform in
# [-0.05, 0.05], which is Keras' "random_uniform".
PAPER_INITIALIZER = "random_uniform"


@register_model(
    architecture=("hidden_units", "batch_norm_affine"),
    default_pretrained="mlp_meta_fashion_mnist_stream",
)
def mlp_meta(
    *,  # Keyword arguments only
    hidden_units: Sequence[int] = DEFAULT_HIDDEN_UNITS,
    input_shape: Optional[Sequence[int]] = (28, 28, 1),
    input_tensor: Optional[tf.Tensor] = None,
    num_classes: int = 10,
    weights: WeightsType = None,
    pretrained: bool = False,
    kernel_initializer: str = PAPER_INITIALIZER,
    precision: str = DEFAULT_PRECISION,
    batch_norm_affine: bool = True,
    name: str = "mlp_meta",
) -> tf.keras.Model:
    """Instantiates the metaplastic binarized MLP (Laborieux et al. 2021).

    The input is flattened and fed, real-valued, to a dense layer with a binary kernel;
    every later dense layer has binary kernels and binary (`"ste_sign"`) inputs. Each
    dense layer is followed by batch normalization, the output layer included, and the
    model returns logits (no softmax). Layers: `dense_1`/`bn_1`, ..., `dense_out`/`bn_out`.

    # Arguments
        hidden_units: widths of the hidden layers, at least one.
        input_shape: shape of one sample; ignored when `input_tensor` is given.
        input_tensor: optional Keras tensor (e.g. the output of `tf.keras.Input()`) to
            use as the model's input.
        num_classes: number of output logits.
        weights: `None` (random initialization), a path to a weights file (`.h5` or a
            TensorFlow checkpoint prefix) to load, or a pretrained model name (see
            `zoo.pretrained`; its sha256-verified weights are copied in).
        pretrained: load the default pretrained model,
            `"mlp_meta_fashion_mnist_stream"` (stream Fashion-MNIST, Fig. 3); the other
            arguments must then be that model's (`hidden_units=(1024, 1024)`, 28x28x1
            inputs, 10 classes).
        kernel_initializer: initializer of the latent binary kernels (a Keras
            initializer identifier or instance); default the paper's, uniform in
            [-0.05, 0.05].
        precision: `"float32"`, or `"bf16"`: the binary layers compute in bfloat16
            (latent kernels, batch normalization and logits stay float32; see
            `zoo.precision`).
        batch_norm_affine: whether each batch normalization learns a scale gamma and
            an offset beta (Keras' `scale` and `center`); `False` only normalizes, as
            the network of the paper's Fashion-MNIST stream (PyTorch's
            `BatchNorm1d(affine=False)`).
        name: model name.

    # Returns
        A built `tf.keras.Model`.

    # Raises
        ValueError: in case of invalid `hidden_units`, `input_shape`, `input_tensor`,
            `num_classes`, `weights`, `pretrained`, `precision` or
            `batch_norm_affine`, or arguments that differ from the pretrained model's.
    """
    precision = check_precision(precision)
    hidden_units = check_units(hidden_units, "hidden_units")
    check_choice(batch_norm_affine, "batch_norm_affine", (True, False))
    weights = pretrained_weights(weights, pretrained=pretrained, factory="mlp_meta")
    input_shape = layers.validate_arguments(
        input_shape=input_shape, input_tensor=input_tensor, num_classes=num_classes
    )
    check_weights(
        weights,
        factory="mlp_meta",
        input_shape=input_shape,
        num_classes=num_classes,
        architecture={
            "hidden_units": hidden_units,
            "batch_norm_affine": batch_norm_affine,
        },
    )
    inputs, x = layers.model_input(input_shape, input_tensor)

    x = tf.keras.layers.Flatten(name="flatten")(x)
    x = layers.binary_dense_stack(
        x,
        hidden_units,
        num_classes=num_classes,
        first_index=1,
        first=True,
        kernel_initializer=kernel_initializer,
        precision=precision,
        batch_norm_affine=batch_norm_affine,
    )

    model = tf.keras.Model(inputs=inputs, outputs=x, name=name)
    return load_weights(model, weights)


@register_model(architecture=("hidden_units", "batch_norm_affine"), binary=False)
def mlp_float(
    *,  # Keyword arguments only
    hidden_units: Sequence[int] = DEFAULT_HIDDEN_UNITS,
    input_shape: Optional[Sequence[int]] = (28, 28, 1),
    input_tensor: Optional[tf.Tensor] = None,
    num_classes: int = 10,
    weights: WeightsType = None,
    kernel_initializer: str = PAPER_INITIALIZER,
    batch_norm_affine: bool = True,
    name: str = "mlp_float",
) -> tf.keras.Model:
    """Instantiates the full-precision MLP of the same shape as `mlp_meta`.

    The paper's full-precision reference network (the reference code's `DNN`, Fig. 2f):
    float dense layers without bias, each followed by batch normalization, with ReLU
    between them; the model returns the batch-normalized logits. Layers have the names of
    `mlp_meta` (`dense_1`/`bn_1`/`relu_1`, ..., `dense_out`/`bn_out`) and the same
    number of parameters. Train it with
    `MetaplasticAdam(metaplastic_variables="kernels")` to apply the metaplastic rule to
    its float kernels, as in the paper.

    # Arguments
        hidden_units: widths of the hidden layers, at least one.
        input_shape: shape of one sample; ignored when `input_tensor` is given.
        input_tensor: optional Keras tensor (e.g. the output of `tf.keras.Input()`) to
            use as the model's input.
        num_classes: number of output logits.
        weights: `None` (random initialization) or a path to a weights file (`.h5` or a
            TensorFlow checkpoint prefix) to load.
        kernel_initializer: initializer of the kernels (a Keras initializer
            identifier or instance); default the paper's, uniform in [-0.05, 0.05].
        batch_norm_affine: whether each batch normalization learns gamma and beta
            (see `mlp_meta`).
        name: model name.

    # Returns
        A built `tf.keras.Model`.

    # Raises
        ValueError: in case of invalid `hidden_units`, `input_shape`, `input_tensor`,
            `num_classes`, `weights` or `batch_norm_affine`.
    """
    hidden_units = check_units(hidden_units, "hidden_units")
    check_choice(batch_norm_affine, "batch_norm_affine", (True, False))
    input_shape = layers.validate_arguments(
        input_shape=input_shape, input_tensor=input_tensor, num_classes=num_classes
    )
    check_weights(
        weights,
        factory="mlp_float",
        input_shape=input_shape,
        num_classes=num_classes,
        architecture={
            "hidden_units": hidden_units,
            "batch_norm_affine": batch_norm_affine,
        },
    )
    inputs, x = layers.model_input(input_shape, input_tensor)

    x = tf.keras.layers.Flatten(name="flatten")(x)
    tags = [str(i + 1) for i in range(len(hidden_units))] + ["out"]
    for units, tag in zip([*hidden_units, num_classes], tags):
        x = tf.keras.layers.Dense(
            units,
            use_bias=False,
            kernel_initializer=kernel_initializer,
            name=f"dense_{tag}",
        )(x)
        x = layers.batch_norm(name=f"bn_{tag}", affine=batch_norm_affine)(x)
        if tag != "out":
            x = tf.keras.layers.ReLU(name=f"relu_{tag}")(x)

    model = tf.keras.Model(inputs=inputs, outputs=x, name=name)
    return load_weights(model, weights)
