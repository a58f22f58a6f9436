"""Continual-learning baselines with task boundaries: EWC, random consolidation and SI.

The methods the metaplastic BNN is compared with (Laborieux et al. 2021, Table 1), for
any zoo model. Each keeps, per consolidated variable (every trainable variable outside
BatchNorm layers; for binary layers the hidden weights `Wh`), importance accumulators
and adds a quadratic penalty that pulls the weights towards their values at the end of
earlier tasks:

- `ElasticWeightConsolidation` (EWC, Kirkpatrick et al. 2017), importance = diagonal
  empirical Fisher information of each task, computed with the binarized weights;
  `shuffle=True` is the paper's "random consolidation" control (each layer's Fisher
  values randomly permuted);
- `SynapticIntelligence` (SI, Zenke et al. 2017), importance = path integral of the
  loss decrease along the task's trajectory.

Which weights the penalty compares is chosen by `on` (`CONSOLIDATION_TARGETS`):

- `"binary"` (default, the paper's reference code): binary variables are penalized
  through their binarized values `Wb = sign(Wh)` (what the forward pass uses) against
  binarized anchors, and the penalty's gradient with respect to `Wb` is passed
  straight through, unchanged, to `Wh`: only weights whose sign differs from an anchor
  feel it. Variables the forward pass does not binarize (biases, float layers, every
  variable of `mlp_float`) keep the real-valued penalty on themselves.
- `"latent"`: the penalty is on the hidden weights `Wh` against hidden-weight anchors,
  as EWC and SI are for real-valued networks.

`with_baseline` wraps a zoo model in a `ConsolidatedModel` (the same layers and
variables) whose training step adds the penalty's analytic gradient to the task-loss
gradient, so that `model.fit` trains with any optimizer (`MetaplasticAdam` with any `m`
included) and with `jit_compile`. Call `model.consolidate(data)` at the end of each
task. The accumulators are `tf.Variable`s tracked by the model's checkpoint, with the
same structure for both targets.

!!! example
    ```python
    model = with_baseline(zoo.mlp_meta(), "ewc", ewc_lambda=5e3)
    for task in tasks:
        model.compile(MetaplasticAdam(0.005, meta=0.0), loss=..., metrics=["accuracy"])
        model.fit(task.train_data(batch_size=100, seed=0), epochs=20)
        model.consolidate(task.train_data(batch_size=100, seed=1))  # Fisher of the task
    ```
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from zoo.validation import check_positive_int, check_real

__all__ = [
    "BASELINES",
    "CONSOLIDATION_TARGETS",
    "ConsolidatedModel",
    "ElasticWeightConsolidation",
    "FisherEstimator",
    "SynapticIntelligence",
    "consolidated_variables",
    "diagonal_fisher",
    "with_baseline",
]

BASELINES = ("ewc", "ewc_random", "si")
# What the penalties compare for binary variables: the binarized weights (the paper's
# reference code) or the hidden weights.
CONSOLIDATION_TARGETS = ("binary", "latent")
# EWC strength of the paper's BNN + EWC runs (reference README: --ewc-lambda 5e3).
EWC_LAMBDA = 5e3
# Samples of the Fisher estimate (reference main.py: estimate_fisher(..., num=5000)).
FISHER_SAMPLES = 5000
# SI strength: Zenke et al. 2017 use c = 0.1 for permuted MNIST (the reference code
# takes it from the command line, default 0).
SI_C = 0.1
# SI damping xi of Omega = omega / (delta**2 + xi): reference update_omega(epsilon=0.1).
SI_XI = 0.1
# Floats of per-example values (convolutions, fallback) the Fisher holds per batch.
_PER_EXAMPLE_BUDGET = 2**26


def _latent(var: tf.Variable) -> tf.Variable:
    """The hidden weights of a Larq quantized variable, else the variable itself."""
    return getattr(var, "latent_variable", var)


def _check_target(on: str) -> str:
    if not isinstance(on, str) or on not in CONSOLIDATION_TARGETS:
        raise ValueError(f"on must be one of {CONSOLIDATION_TARGETS}, got {on!r}.")
    return on


def _binarizer(var: tf.Variable, on: str):
    """The quantizer the forward pass applies to `var` if the penalty is to compare
    its binarized values (`on == "binary"` and `var` a Larq quantized variable with a
    quantizer), else `None` (the penalty compares the variable itself)."""
    if on != "binary" or not hasattr(var, "latent_variable"):
        return None
    return getattr(var, "quantizer", None)


def _binarize(quantizer, w: tf.Tensor) -> tf.Tensor:
    """`quantizer(w)` in `w`'s dtype (e.g. `sign(w)`, with sign(0) = +1 for Larq's
    `SteSign`), or `w` itself if `quantizer` is `None`. Only the forward value is used:
    the penalties' gradients are analytic, passed straight through to `w`."""
    if quantizer is None:
        return w
    return tf.cast(quantizer(w), w.dtype)


# Per-step work in plain TensorFlow ops: on CPU, Eigen's multithreaded elementwise ops
# and reductions run about 3x faster here than one fused XLA kernel.
def _ewc_penalty(w, a, b, ewc_lambda):
    """`(sum(A W^2 - 2 B W), lambda (A W - B))` for one variable, the sum in float64."""
    slope = a * w - b  # = sum_t F_t (W - W*_t)
    value = tf.reduce_sum(tf.cast(w * (slope - b), tf.float64))
    return value, ewc_lambda * slope


def _si_penalty(w, importance, anchor, two_c):
    """`(sum(Omega (W - W*)^2), 2 c Omega (W - W*))` for one variable."""
    weighted = importance * (w - anchor)
    value = tf.reduce_sum(tf.cast(weighted * (w - anchor), tf.float64))
    return value, two_c * weighted


def consolidated_variables(model: tf.keras.Model) -> list[tf.Variable]:
    """The variables a baseline consolidates: trainable ones outside BatchNorm layers.

    BatchNorm parameters are excluded as in the reference code (they are kept per task
    instead). Binary kernels are returned as the model holds them (Larq quantized
    variables); baselines read their hidden weights and penalize either these or
    their binarized values (see `with_baseline`'s `on`).

    # Arguments
        model: a Keras model.

    # Returns
        The variables, in the order of `model.trainable_variables`.
    """
    batch_norm = {
        id(v)
        for layer in model.submodules
        if isinstance(layer, tf.keras.layers.BatchNormalization)
        for v in layer.weights
    }
    return [v for v in model.trainable_variables if id(v) not in batch_norm]


def _linear_single_call(layer) -> bool:
    return len(layer.inbound_nodes) == 1 and layer.activation is (
        tf.keras.activations.linear
    )


def _is_dense(layer) -> bool:
    """A dense layer (float or Larq) on flat inputs: per-example kernel gradients are
    `outer(input, dL/doutput)`."""
    return (
        isinstance(layer, tf.keras.layers.Dense)
        and _linear_single_call(layer)
        and len(layer.input.shape) == 2
    )


def _is_conv(layer) -> bool:
    """A 2D convolution (float or Larq) whose per-example kernel gradients are
    `patches(input)^T dL/doutput`."""
    return (
        isinstance(layer, tf.keras.layers.Conv2D)
        and not isinstance(layer, tf.keras.layers.Conv2DTranspose)
        and _linear_single_call(layer)
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and layer.padding in ("same", "valid")
    )


def _quantizer_derivative(quantizer, var: tf.Variable) -> tf.Tensor | None:
    """The elementwise derivative of a kernel quantizer at the current weights (the
    straight-through estimator's mask), or `None` for the identity."""
    if quantizer is None:
        return None
    latent = tf.convert_to_tensor(_latent(var))
    with tf.GradientTape() as tape:
        tape.watch(latent)
        quantized = quantizer(latent)
    return tape.gradient(quantized, latent, output_gradients=tf.ones_like(quantized))


def _conv_patches(layer, inputs: tf.Tensor) -> tf.Tensor:
    """The convolution's input patches, `(batch, positions, kh * kw * channels)`, padded
    as the layer pads (Larq's `pad_values` included)."""
    if layer.padding == "same":
        paddings = [[0, 0]]
        for axis, (k, s, d) in enumerate(
            zip(layer.kernel_size, layer.strides, layer.dilation_rate), start=1
        ):
            size = inputs.shape[axis]
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            paddings.append([total // 2, total - total // 2])
        paddings.append([0, 0])
        pad_value = getattr(layer, "pad_values", 0.0)
        inputs = tf.pad(inputs, paddings, constant_values=pad_value)
    patches = tf.image.extract_patches(
        inputs,
        sizes=[1, *layer.kernel_size, 1],
        strides=[1, *layer.strides, 1],
        rates=[1, *layer.dilation_rate, 1],
        padding="VALID",
    )
    return tf.reshape(patches, [tf.shape(inputs)[0], -1, patches.shape[-1]])


def _as_dataset(data) -> tf.data.Dataset:
    if isinstance(data, tf.data.Dataset):
        return data.unbatch()
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return tf.data.Dataset.from_tensor_slices((data[0], data[1]))
    raise ValueError(
        f"data must be a tf.data.Dataset of (images, labels) batches or a tuple "
        f"(images, labels), got {type(data).__name__}."
    )


def _negative_log_likelihood(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)


class FisherEstimator:
    """Batched diagonal empirical Fisher of a model's variables (see `diagonal_fisher`).

    Built once per model: it finds the layers with closed-form per-example gradients
    and traces one computation, which every call then reuses.

    # Arguments
        model: a Keras model returning logits.
        variables: the variables to estimate the Fisher of; by default
            `consolidated_variables(model)`.
        batch_size: examples per batched computation (fewer where per-example values
            would exceed 2**26 floats).

    # Raises
        ValueError: if `batch_size` is not a positive integer.
    """

    def __init__(
        self,
        model: tf.keras.Model,
        *,
        variables: Sequence[tf.Variable] | None = None,
        batch_size: int = 500,
    ):
        check_positive_int(batch_size, "batch_size")
        self.model = model
        self.variables = list(
            consolidated_variables(model) if variables is None else variables
        )
        position = {id(v): i for i, v in enumerate(self.variables)}
        self._layers = [
            layer
            for layer in model.submodules
            if (_is_dense(layer) or _is_conv(layer))
            and any(id(v) in position for v in layer.trainable_weights)
        ]
        self._terms = []  # (layer index, variable index, "kernel" | "bias")
        per_example = 0  # floats per example held for convolutions or the fallback
        for index, layer in enumerate(self._layers):
            for kind in ("kernel", "bias"):
                var = getattr(layer, kind, None)  # `bias` is None without a bias
                if var is None or id(var) not in position:
                    continue
                self._terms.append((index, position[id(var)], kind))
                if kind == "kernel" and _is_conv(layer):
                    positions = int(np.prod(layer.output.shape[1:-1]))
                    patch = var.shape[:-1].num_elements()
                    size = var.shape.num_elements() + positions * (
                        patch + var.shape[-1]
                    )
                    per_example = max(per_example, size)
        covered = {i for _, i, _ in self._terms}
        self._generic = [i for i in range(len(self.variables)) if i not in covered]
        generic_size = sum(
            self.variables[i].shape.num_elements() for i in self._generic
        )
        per_example = max(per_example, generic_size)
        if per_example:
            batch_size = max(1, min(batch_size, _PER_EXAMPLE_BUDGET // per_example))
        self.batch_size = batch_size
        self._probe = tf.keras.Model(
            model.inputs,
            [model.outputs[0]]
            + [layer.input for layer in self._layers]
            + [layer.output for layer in self._layers],
        )
        self._sums = tf.function(self._squared_gradient_sums, reduce_retracing=True)

    def _masks(self) -> list:
        """Per term, the kernel quantizer's straight-through mask at the current
        weights (`None` for biases and unquantized kernels)."""
        return [
            _quantizer_derivative(
                getattr(self._layers[index], "kernel_quantizer", None),
                self.variables[i],
            )
            if kind == "kernel"
            else None
            for index, i, kind in self._terms
        ]

    def _squared_gradient_sums(self, images, labels, masks):
        """Per variable, the sum over the batch of squared per-example gradients."""
        sums = [None] * len(self.variables)
        count = len(self._layers)
        if self._terms:
            with tf.GradientTape() as tape:
                outputs = self._probe(images, training=False)
                loss = tf.reduce_sum(_negative_log_likelihood(labels, outputs[0]))
            # Examples are independent: d(sum)/d(output_n) = d(loss_n)/d(output_n).
            deltas = tape.gradient(loss, outputs[1 + count :])
            for (index, i, kind), mask in zip(self._terms, masks):
                layer, delta = self._layers[index], deltas[index]
                dtype = self.variables[i].dtype  # float32, also for bf16 layers
                delta = tf.cast(delta, dtype)
                conv = _is_conv(layer)
                if conv:  # (batch, positions, channels)
                    delta = tf.reshape(delta, [tf.shape(delta)[0], -1, delta.shape[-1]])
                if kind == "bias":
                    per_example = tf.reduce_sum(delta, axis=1) if conv else delta
                    sums[i] = tf.reduce_sum(tf.square(per_example), axis=0)
                    continue
                inputs = outputs[1 + index]
                quantizer = getattr(layer, "input_quantizer", None)
                if quantizer is not None:
                    inputs = quantizer(inputs)
                inputs = tf.cast(inputs, dtype)
                if conv:
                    gradients = tf.matmul(
                        _conv_patches(layer, inputs), delta, transpose_a=True
                    )
                    total = tf.reshape(
                        tf.reduce_sum(tf.square(gradients), axis=0),
                        self.variables[i].shape,
                    )
                else:
                    total = tf.matmul(
                        tf.square(inputs), tf.square(delta), transpose_a=True
                    )
                sums[i] = total if mask is None else total * tf.square(mask)
        if self._generic:
            chosen = [self.variables[i] for i in self._generic]

            def example_squares(example):
                image, label = example
                with tf.GradientTape() as tape:
                    logits = self.model(image[None], training=False)
                    loss = _negative_log_likelihood(label[None], logits)
                return [tf.square(g) for g in tape.gradient(loss, chosen)]

            # Not tf.vectorized_map: its PadV2 conversion drops constant_values
            # (TF 2.15), which Larq's pad_values=1 convolutions use.
            squares = tf.map_fn(
                example_squares,
                (images, labels),
                fn_output_signature=[tf.TensorSpec(v.shape, v.dtype) for v in chosen],
            )
            for i, square in zip(self._generic, squares):
                sums[i] = tf.reduce_sum(square, axis=0)
        return sums

    def __call__(self, data, *, num_samples: int = FISHER_SAMPLES) -> list[tf.Tensor]:
        """The Fisher on the first `num_samples` examples of `data`, one per variable.

        # Raises
            ValueError: if `data` is empty or of an unknown type, or `num_samples` is
                not a positive integer.
        """
        check_positive_int(num_samples, "num_samples")
        masks = self._masks()
        totals = [tf.zeros(v.shape, v.dtype) for v in self.variables]
        seen = 0
        batches = _as_dataset(data).take(num_samples).batch(self.batch_size)
        for images, labels in batches:
            sums = self._sums(images, labels, masks)
            totals = [t + s for t, s in zip(totals, sums)]
            seen += int(tf.shape(labels)[0])
        if seen == 0:
            raise ValueError("data holds no examples to estimate the Fisher.")
        return [t / seen for t in totals]


def diagonal_fisher(
    model: tf.keras.Model,
    data,
    *,
    variables: Sequence[tf.Variable] | None = None,
    num_samples: int = FISHER_SAMPLES,
    batch_size: int = 500,
) -> list[tf.Tensor]:
    """Diagonal empirical Fisher information of `model` on `data`, batched.

    Matches the reference code's `estimate_fisher(..., empirical=True)`: the mean over
    `num_samples` examples of the squared gradient of the negative log-likelihood of
    the true label, `-log softmax(f(x))[y]`, one example at a time, with the network in
    inference mode (BatchNorm uses its moving statistics, so the examples do not
    interact). Binary layers compute with `sign(Wh)`, so these are gradients at the
    binarized weights. The reference divides the sum by its sample count `num` (5000)
    when the data holds more; with fewer samples this divides by their number (the
    reference by one less). It reads the first samples of its loader; this reads the
    first `num_samples` of `data`.

    Per-example gradients are exact and batched: for dense layers
    `sum_n g_n**2 = (X**2)^T (D**2)` (inputs `X` after the layer's input quantizer,
    output gradients `D`); for 2D convolutions `g_n = P_n^T D_n` from the input
    patches `P_n`; kernels are multiplied by their quantizer's straight-through mask.
    Variables of other layers fall back to one gradient per example (`tf.map_fn`).
    To estimate it repeatedly, build one `FisherEstimator` and call it.

    # Arguments
        model: a Keras model returning logits.
        data: a `tf.data.Dataset` of `(images, labels)` batches, or a tuple of arrays.
        variables: the variables to estimate the Fisher of; by default
            `consolidated_variables(model)`.
        num_samples: number of examples to average over (the first ones of `data`).
        batch_size: examples per batched computation (fewer where per-example values
            would exceed 2**26 floats).

    # Returns
        One tensor per variable, of the variable's shape.

    # Raises
        ValueError: if `data` is empty or of an unknown type, or `num_samples` or
            `batch_size` is not a positive integer.
    """
    estimator = FisherEstimator(model, variables=variables, batch_size=batch_size)
    return estimator(data, num_samples=num_samples)


class _Consolidation(tf.Module):
    """Accumulators for a list of variables: the penalty, its gradient, task ends."""

    def __init__(self, variables: Sequence[tf.Variable], name: str, on: str):
        super().__init__(name=name)
        # Not tracked attributes: only variables belong in the checkpoint, which is
        # thus the same for both targets.
        object.__setattr__(self, "_shapes", [tuple(v.shape) for v in variables])
        object.__setattr__(self, "_on", _check_target(on))
        object.__setattr__(self, "_quantizers", [_binarizer(v, on) for v in variables])
        self.tasks_consolidated = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="tasks_consolidated"
        )

    @property
    def on(self) -> str:
        """What the penalty compares: `"binary"` or `"latent"` (see `with_baseline`)."""
        return self._on

    @property
    def binarized(self) -> list[bool]:
        """Per variable, whether the penalty compares its binarized values."""
        return [q is not None for q in self._quantizers]

    def _zeros(self, variables, name: str) -> list[tf.Variable]:
        return [
            tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=name)
            for v in variables
        ]

    def _check(self, variables) -> list[tf.Variable]:
        if [tuple(v.shape) for v in variables] != self._shapes:
            raise ValueError(
                f"variables have shapes {[tuple(v.shape) for v in variables]}, the "
                f"accumulators {self._shapes}: pass the variables they were built for."
            )
        return [_latent(v) for v in variables]

    def _targets(self, variables) -> list[tf.Tensor]:
        """The weights the penalty compares: `sign(Wh)` for binarized variables, the
        variables' values otherwise."""
        return [
            _binarize(q, tf.convert_to_tensor(w))
            for q, w in zip(self._quantizers, self._check(variables))
        ]

    def penalty_and_gradients(
        self, variables: Sequence[tf.Variable]
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """The penalty at the current weights and its gradient, one per variable.

        # Arguments
            variables: the consolidated variables.

        # Returns
            The penalty (a float32 scalar) and, per variable, the gradient to add to
            its task-loss gradient (for binarized variables, the gradient with respect
            to `sign(Wh)`, passed straight through to `Wh`).

        # Raises
            ValueError: if `variables` are not those the accumulators were built for.
        """
        raise NotImplementedError

    def before_step(self, variables: Sequence[tf.Variable]):
        """Called before each optimizer step; returns what `after_step` needs."""
        return None

    def after_step(self, variables, task_gradients, before) -> None:
        """Called after each optimizer step with the task loss' gradients."""
        del variables, task_gradients, before

    def consolidate(self, model: tf.keras.Model, data=None) -> None:
        """Called at the end of each task, with that task's training data."""
        raise NotImplementedError


class ElasticWeightConsolidation(_Consolidation):
    """EWC with one quadratic penalty per learned task, on the binarized weights (by
    default, as the paper) or on the hidden weights.

    With `on="binary"`, for the variables the forward pass binarizes (Larq quantized
    kernels), the penalty is
    `ewc_lambda / 2 * sum_t sum_i F_t,i (sign(Wh_i) - sign(Wh*_t,i))**2`, `Wh*_t` being
    the hidden weights at the end of task `t` (`sign` is the variable's own quantizer,
    so sign(0) = +1), and its gradient
    `ewc_lambda * sum_t F_t,i (sign(Wh_i) - sign(Wh*_t,i))` is applied to `Wh` as it is
    (straight-through, identity: not clipped, whatever the magnitude of `Wh`). It is
    zero for a weight whose sign agrees with every anchor and
    `2 ewc_lambda sign(Wh_i) sum_{t: anchor flipped} F_t,i` otherwise. This is the
    reference code's `EWC_loss` (Laborieux-Axel/SynapticMetaplasticityBNN,
    `Continual_Learning_Fig-2abcdefgh-3abcd-5cde`): its `BinarizeLinear` overwrites the
    weight tensor with `sign(Wh)` at every forward pass, so the penalty, evaluated
    after the forward pass, sees `sign(Wh)`, and the anchors, cloned in `main.py` after
    `estimate_fisher` ran the network, are `sign(Wh*)`; the gradient with respect to
    the binary tensor is then given to the hidden weights (restored from `org`) and to
    the optimizer, together with the task gradient. Here too the penalty gradient is
    added to the task gradient before the optimizer step (so `MetaplasticAdam`
    attenuates it as it does the task gradient). Variables the forward pass does not
    binarize (biases, float layers, all of `mlp_float`) get the real-valued penalty
    below, as the reference does for its float network.

    With `on="latent"`, and with `on="binary"` for the variables that are not
    binarized, the penalty is `ewc_lambda / 2 * sum_t sum_i F_t,i (W_i - W*_t,i)**2` on
    the variables' values `W` (for binary layers the hidden weights `Wh`), as in EWC
    for real-valued networks.

    `F_t` is the diagonal empirical Fisher of task `t` (`diagonal_fisher`, computed
    with the binarized weights in the forward pass). The reference differentiates with
    respect to the binary tensor itself; here kernel gradients go through the kernel
    quantizer's straight-through estimator, the identity for the zoo's
    `SteSign(clip_value=None)`, so the two coincide. The sum is over
    `consolidated_variables` (BatchNorm excluded, as in the reference). The reference
    keeps one (Fisher, anchor) pair per task; here, with `V` the compared weights
    (`sign(Wh)` or `W`), the accumulators `A = sum_t F_t` and `B = sum_t F_t V*_t`
    (`fisher_sum`, `fisher_weight_sum`, one per variable) and the scalar
    `C = sum_t sum_i F_t,i V*_t,i**2` (`fisher_weight_sq_total`, float64: only its sum
    enters) give the same penalty `ewc_lambda / 2 * (sum(A V**2 - 2 B V) + C)` and
    gradient `ewc_lambda (A V - B)`, with memory (twice the weights) independent of the
    number of tasks. The logged penalty value carries float32 rounding of `A V**2` and
    `2 B V`, which nearly cancel near the anchors; the gradient does not.

    Random consolidation (`shuffle=True`) permutes each variable's Fisher values with
    one random permutation of all its elements, a new one per task, and keeps the same
    anchors, as the reference's `--rnd-consolidation` (`torch.randperm` over
    `nelement()`; its published `main.py` then also appends the unshuffled Fisher, a
    line its README says to comment out for this control).

    # Arguments
        variables: the variables to consolidate (`consolidated_variables(model)`).
        ewc_lambda: the penalty strength (paper: 5e3).
        shuffle: random consolidation: each layer's Fisher values are randomly
            permuted before they are accumulated (the paper's control, Table 1).
        num_samples: examples of each task's Fisher estimate (reference: 5000).
        seed: seed of the permutations (with the task count, so resumes repeat them).
        on: `"binary"` (penalty on `sign(Wh)` of binary variables, straight-through
            gradient) or `"latent"` (on the hidden weights), see
            `CONSOLIDATION_TARGETS`.
        name: the module's name.

    # Raises
        ValueError: for a negative or non-finite `ewc_lambda`, a bad `num_samples` or
            an unknown `on`.
    """

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        *,
        ewc_lambda: float = EWC_LAMBDA,
        shuffle: bool = False,
        num_samples: int = FISHER_SAMPLES,
        seed: int = 0,
        on: str = "binary",
        name: str = "ewc",
    ):
        super().__init__(variables, name=name, on=on)
        self.ewc_lambda = check_real(ewc_lambda, "ewc_lambda", low=0)
        self.shuffle = bool(shuffle)
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.seed = int(seed)
        self.fisher_sum = self._zeros(variables, "fisher_sum")  # A
        self.fisher_weight_sum = self._zeros(variables, "fisher_weight_sum")  # B
        self.fisher_weight_sq_total = tf.Variable(  # C
            0.0, dtype=tf.float64, trainable=False, name="fisher_weight_sq_total"
        )

    def penalty_and_gradients(self, variables):
        total, gradients = self.fisher_weight_sq_total.value(), []
        for v, a, b in zip(
            self._targets(variables), self.fisher_sum, self.fisher_weight_sum
        ):
            value, gradient = _ewc_penalty(
                v, a.value(), b.value(), tf.constant(self.ewc_lambda, v.dtype)
            )
            total += value
            gradients.append(gradient)
        return tf.cast(0.5 * self.ewc_lambda * total, tf.float32), gradients

    def add_task(self, variables: Sequence[tf.Variable], fisher) -> None:
        """Adds a task's penalty: importance `fisher` around the current weights
        (binarized, for binarized variables).

        # Arguments
            variables: the consolidated variables.
            fisher: one importance array per variable (shuffled here if `shuffle`).

        # Raises
            ValueError: if `variables` are not those the accumulators were built for.
        """
        weights = self._targets(variables)
        task = int(self.tasks_consolidated.numpy())
        for index, (w, f) in enumerate(zip(weights, fisher)):
            f = np.asarray(f, dtype=w.dtype.as_numpy_dtype)
            if self.shuffle:
                rng = np.random.default_rng([self.seed, task, index])
                f = rng.permutation(f.ravel()).reshape(f.shape)
            w = w.numpy()
            self.fisher_sum[index].assign_add(f)
            self.fisher_weight_sum[index].assign_add(f * w)
            self.fisher_weight_sq_total.assign_add(
                np.sum(f.astype("float64") * w.astype("float64") ** 2)
            )
        self.tasks_consolidated.assign_add(1)

    def consolidate(self, model, data=None):
        if data is None:
            raise ValueError("EWC needs the finished task's training data.")
        # One estimator per model, traced once for all tasks (not tracked: no Module).
        if (
            getattr(self, "_estimator", None) is None
            or self._estimator.model is not model
        ):
            object.__setattr__(self, "_estimator", FisherEstimator(model))
        self.add_task(
            self._estimator.variables,
            self._estimator(data, num_samples=self.num_samples),
        )


class SynapticIntelligence(_Consolidation):
    """Synaptic Intelligence (Zenke et al. 2017), its penalty on the binarized weights
    (by default, as the paper's reference code) or on the hidden weights.

    During a task, after every optimizer step, the path integral
    `omega += -g * delta_step` accumulates, with `g` the gradient of the task loss alone
    (unregularized, as in Zenke et al.; the reference code's `update_W` uses the
    gradient of the regularized loss) and `delta_step` the step's change of the hidden
    weights (the reference's default; its `--bin-path` option, the change of
    `sign(Wh)`, is not implemented here, and without it its `update_W` pairs each
    gradient with the previous step's change). At the end of the task
    `Omega += omega / (delta_task**2 + xi)`, `delta_task` being the change of the
    hidden weights over the whole task (reference `update_omega`, which uses the hidden
    weights `org` for the BNN), then `omega = 0` and the anchor `W* = W` (the hidden
    weights, `anchor`). These steps are the same for both targets.

    With `on="binary"`, for the variables the forward pass binarizes, the penalty is
    `c * sum Omega (sign(Wh) - sign(Wh*))**2` and its gradient
    `2 c Omega (sign(Wh) - sign(Wh*))` is applied to `Wh` as it is (straight-through,
    identity), before the optimizer step: the reference's `SI_loss` for its BNN,
    `omega * (p - prev_params.sign())**2` with `p` holding `sign(Wh)` after the forward
    pass and `prev_params` the hidden weights at the start of the task. Other variables
    (biases, float layers, all of `mlp_float`), and every variable with
    `on="latent"`, get `c * sum Omega (W - W*)**2` on their values `W` (hidden weights
    `Wh` for binary layers). BatchNorm is excluded, as in the reference.

    # Arguments
        variables: the variables to consolidate (`consolidated_variables(model)`); their
            current values are the anchor of the first task.
        c: the penalty strength (Zenke et al.: 0.1 for permuted MNIST).
        xi: the damping of `Omega` (reference code: 0.1).
        on: `"binary"` (penalty on `sign(Wh)` of binary variables, straight-through
            gradient) or `"latent"` (on the hidden weights), see
            `CONSOLIDATION_TARGETS`.
        name: the module's name.

    # Raises
        ValueError: for a negative `c`, a non-positive `xi` or an unknown `on`.
    """

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        *,
        c: float = SI_C,
        xi: float = SI_XI,
        on: str = "binary",
        name: str = "si",
    ):
        super().__init__(variables, name=name, on=on)
        self.c = check_real(c, "si_c", low=0)
        self.xi = check_real(xi, "si_xi", low=0, low_open=True)
        self.path_integral = self._zeros(variables, "path_integral")  # omega
        self.importance = self._zeros(variables, "importance")  # Omega
        self.anchor = [
            tf.Variable(tf.identity(_latent(v)), trainable=False, name="anchor")
            for v in variables
        ]  # W*, the hidden weights at the start of the current task

    def penalty_and_gradients(self, variables):
        total, gradients = 0.0, []
        for v, quantizer, importance, anchor in zip(
            self._targets(variables), self._quantizers, self.importance, self.anchor
        ):
            value, gradient = _si_penalty(
                v,
                importance.value(),
                _binarize(quantizer, anchor.value()),
                tf.constant(2 * self.c, v.dtype),
            )
            total += value
            gradients.append(gradient)
        return tf.cast(self.c * total, tf.float32), gradients

    def before_step(self, variables):
        return [tf.identity(w) for w in self._check(variables)]

    def after_step(self, variables, task_gradients, before):
        for omega, w, g, w_before in zip(
            self.path_integral, self._check(variables), task_gradients, before
        ):
            if g is not None:
                omega.assign_sub(g * (tf.convert_to_tensor(w) - w_before))

    def consolidate(self, model, data=None):
        weights = self._check(consolidated_variables(model))
        for omega, importance, anchor, w in zip(
            self.path_integral, self.importance, self.anchor, weights
        ):
            w = tf.convert_to_tensor(w)
            importance.assign_add(omega / (tf.square(w - anchor) + self.xi))
            omega.assign(tf.zeros_like(omega))
            anchor.assign(w)
        self.tasks_consolidated.assign_add(1)


class ConsolidatedModel(tf.keras.Model):
    """A model whose training step adds a baseline's penalty (see `with_baseline`).

    Built from `model`'s inputs and outputs: the same layers, names and variables, and
    the same checkpoint structure plus a `consolidation` entry holding the baseline's
    accumulators (they are not in `weights`). `fit` adds the penalty's analytic gradient
    to the task-loss gradient before the optimizer step, logs `loss` = task loss +
    penalty and `penalty`, and lets SI accumulate its path integral after each step.
    `evaluate` and `predict` are those of `model`.

    # Arguments
        model: a built functional Keras model returning logits.
        consolidation: an `ElasticWeightConsolidation` or `SynapticIntelligence` built
            on `consolidated_variables(model)`.

    # Raises
        ValueError: when trained under a `tf.distribute` strategy (not supported).
    """

    def __init__(self, model: tf.keras.Model, consolidation: _Consolidation):
        super().__init__(inputs=model.inputs, outputs=model.outputs, name=model.name)
        # Held outside Keras' attribute tracking (which would add the accumulators to
        # `weights`), but saved with the model's checkpoint.
        object.__setattr__(self, "_consolidation", consolidation)
        object.__setattr__(self, "_penalty", tf.keras.metrics.Mean(name="penalty"))
        self._track_trackable(consolidation, name="consolidation")

    @property
    def consolidation(self) -> _Consolidation:
        """The baseline: its accumulators and penalty."""
        return self._consolidation

    @property
    def metrics(self):
        return [*super().metrics, self._penalty]

    def consolidate(self, data=None) -> None:
        """Ends a task: EWC estimates the task's Fisher from `data`, SI updates its
        importance. Call it after the task's last epoch, with its BatchNorm state.

        # Arguments
            data: the finished task's training data (`(images, labels)` batches);
                required by EWC, ignored by SI.
        """
        self._consolidation.consolidate(self, data)

    def make_train_function(self, force=False):
        # Checked here, before tracing, so that the error stays one line.
        if (
            tf.distribute.has_strategy()
            or self.distribute_strategy is not tf.distribute.get_strategy()
        ):
            raise ValueError(
                "continual-learning baselines do not run under tf.distribute "
                "strategies; train without a strategy."
            )
        return super().make_train_function(force=force)

    def train_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        consolidated = consolidated_variables(self)
        penalty, penalty_gradients = self._consolidation.penalty_and_gradients(
            consolidated
        )
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            # A constant here: logged in `loss`; its gradient is added below.
            loss = self.compiled_loss(
                y, y_pred, sample_weight, regularization_losses=[*self.losses, penalty]
            )
        gradients = tape.gradient(loss, variables)
        task_gradients = dict(zip(map(id, variables), gradients))
        penalty_gradients = dict(zip(map(id, consolidated), penalty_gradients))
        total = []
        for v, g in zip(variables, gradients):
            extra = penalty_gradients.get(id(v))
            total.append(g if extra is None else (extra if g is None else g + extra))
        before = self._consolidation.before_step(consolidated)
        self.optimizer.apply_gradients(zip(total, variables))
        self._consolidation.after_step(
            consolidated, [task_gradients.get(id(v)) for v in consolidated], before
        )
        self._penalty.update_state(penalty)
        return self.compute_metrics(x, y, y_pred, sample_weight)


def with_baseline(
    model: tf.keras.Model,
    baseline: str,
    *,
    ewc_lambda: float = EWC_LAMBDA,
    fisher_samples: int = FISHER_SAMPLES,
    si_c: float = SI_C,
    si_xi: float = SI_XI,
    seed: int = 0,
    on: str = "binary",
) -> ConsolidatedModel:
    """Wraps `model` so that `fit` trains it with a continual-learning baseline.

    # Arguments
        model: a built functional model returning logits (e.g. from `zoo`).
        baseline: `"ewc"`, `"ewc_random"` (EWC with each layer's Fisher values shuffled)
            or `"si"`.
        ewc_lambda: EWC strength (paper: 5e3).
        fisher_samples: examples of each task's Fisher estimate (reference: 5000).
        si_c: SI strength (Zenke et al.: 0.1).
        si_xi: SI damping (reference code: 0.1).
        seed: seed of random consolidation's permutations.
        on: what the penalty compares, one of `CONSOLIDATION_TARGETS`: `"binary"` (the
            paper's reference code) penalizes the binarized weights `sign(Wh)` of
            binary layers against binarized anchors, its gradient passed straight
            through (identity) to the hidden weights, so that only weights whose sign
            flipped feel it; `"latent"` penalizes the hidden weights `Wh` against
            hidden-weight anchors. Variables the forward pass does not binarize
            (biases, float layers, all of `mlp_float`) get the real-valued penalty in
            both cases.

    # Returns
        A `ConsolidatedModel` sharing `model`'s layers and variables.

    # Raises
        ValueError: for an unknown baseline or `on`, or invalid strengths.
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}.")
    on = _check_target(on)
    variables = consolidated_variables(model)
    if baseline == "si":
        consolidation = SynapticIntelligence(variables, c=si_c, xi=si_xi, on=on)
    else:
        consolidation = ElasticWeightConsolidation(
            variables,
            ewc_lambda=ewc_lambda,
            shuffle=baseline == "ewc_random",
            num_samples=fisher_samples,
            seed=seed,
            on=on,
        )
    return ConsolidatedModel(model, consolidation)
