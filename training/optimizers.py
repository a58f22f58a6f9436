"""Metaplastic Adam: the optimizer of Laborieux et al., "Synaptic metaplasticity in
binarized neural networks" (Nature Communications, 2021).

A binarized network keeps a real-valued hidden (latent) weight `Wh` per synapse and uses
`sign(Wh)` in the forward pass. Metaplasticity makes a weight harder to flip the larger
`|Wh|` is: Adam's step is multiplied by `1 - tanh(m * |Wh|)**2` whenever it pushes `Wh`
towards zero (`sign(Wh) * m_hat > 0`, gated on Adam's first moment, not on the raw
gradient). Steps that push `Wh` away from zero, and all non-binary variables (BatchNorm,
float layers), get plain Adam. `m = 0` is exactly Adam.

By default only binary latent kernels are damped: Larq quantized variables of precision
1, such as the kernels of every binary layer in `zoo`. Their latent weights must be free
to grow, so use `SteSign(clip_value=None)` as kernel quantizer and no `weight_clip`
constraint. `metaplastic_variables="kernels"` applies the same rule to every variable
named `.../kernel`, float ones included, with `sign(W)` and `|W|` of the float weight:
the full-precision network of the paper's comparison (Fig. 2f, `zoo.mlp_float`).

!!! example
    ```python
    import zoo
    from training.optimizers import MetaplasticAdam

    model = zoo.mlp_meta(hidden_units=(1024, 1024))
    model.compile(
        MetaplasticAdam(learning_rate=0.005, meta=1.35),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    ```
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import tensorflow as tf

__all__ = ["MetaplasticAdam", "is_binary_variable", "is_kernel_variable", "layer_name"]

# Which variables get the metaplastic rule: binary latent kernels, or every kernel.
METAPLASTIC_VARIABLES = ("binary", "kernels")


def is_binary_variable(var: tf.Variable) -> bool:
    """Returns `True` for Larq quantized variables of precision 1 (binary kernels).

    # Arguments
        var: a variable, as passed to the optimizer.
    """
    return getattr(var, "precision", None) == 1


def is_kernel_variable(var: tf.Variable) -> bool:
    """Returns `True` for a layer's kernel: a variable named `.../kernel`.

    # Arguments
        var: a variable, as passed to the optimizer.
    """
    return var.name.split(":")[0].rpartition("/")[2] == "kernel"


def _var_key(var) -> object:
    """A key that is the same for a variable, its Larq wrapper and its replicas.

    `tf.distribute` updates a distributed variable one device at a time, passing the
    optimizer each device's own component: a plain variable that links back to its
    distributed variable through `_distributed_container`, on itself in older
    TensorFlow, on its handle in newer ones (as Keras' own slot lookup reads it). Only
    the first replica's component shares the distributed variable's id: without that
    link every other replica would get `m = 0` (plain Adam), and the replicas of a
    binary kernel would drift apart at every step.
    """
    var = getattr(var, "latent_variable", var)  # a Larq QuantizedVariable's own
    if hasattr(var, "_distributed_container"):
        var = var._distributed_container()
    elif not isinstance(var, tf.distribute.DistributedValues):
        # (a distributed variable's `handle` raises outside a replica context)
        container = getattr(
            getattr(var, "handle", None), "_distributed_container", None
        )
        if container is not None:
            var = container()
    return var._shared_name if var._in_graph_mode else var._unique_id


def layer_name(var: tf.Variable) -> str:
    """The name scope of a variable, i.e. its layer: `dense_1/kernel:0` -> `dense_1`."""
    return var.name.split(":")[0].rpartition("/")[0]


def _check_meta(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number >= 0, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be finite and >= 0, got {value!r}.")
    return float(value)


@tf.function(jit_compile=True)
def _metaplastic_adam_update(
    var, m, v, grad, alpha, beta_1, beta_2, epsilon, meta, weight_decay
):
    """The whole update as one XLA kernel, as cheap in memory traffic as fused Adam.

    XLA on CPU compiles this into three loops, each split over all cores: `m`, `v`, and
    `var` from `var`, `m_t`, `v_t`; ten array reads and writes per weight, as Keras'
    fused `ResourceApplyAdam`. The damping multiplies `step` through a `where` on the
    multiplier so that `step` has one consumer: `where(c, step * damping, step)` gave it
    two, and XLA, which does not duplicate a division into both, wrote `step` to a
    temporary array first (thirteen reads and writes; the update took 1.4 times as long).

    Takes resource handles (not variables, which a cached trace would keep alive) and
    uses the same operations as TensorFlow's fused `ApplyAdam`, so that the undamped
    branch equals legacy Adam to float32 rounding. Inside an XLA-compiled train step
    this function is inlined into the step's cluster, with the same numbers.

    The L2 term `weight_decay * Wh` joins the gradient inside the kernel, from the `Wh`
    it reads anyway (separate operations before it made about five more passes over
    the weights). `weight_decay=None` traces the kernel without it: a zero passed as a
    tensor would still read `Wh` in the `m` and `v` loops.
    """
    dtype = grad.dtype
    w = tf.raw_ops.ReadVariableOp(resource=var, dtype=dtype)
    m_t = tf.raw_ops.ReadVariableOp(resource=m, dtype=dtype)
    v_t = tf.raw_ops.ReadVariableOp(resource=v, dtype=dtype)
    if weight_decay is not None:
        grad += weight_decay * w
    m_t += (grad - m_t) * (1.0 - beta_1)
    v_t += (tf.square(grad) - v_t) * (1.0 - beta_2)
    step = m_t * alpha / (tf.sqrt(v_t) + epsilon)
    # sign(Wh) * m_hat > 0: the step moves Wh towards zero, so damp it.
    damping = 1.0 - tf.square(tf.tanh(meta * tf.abs(w)))
    step *= tf.where(tf.sign(w) * m_t > 0.0, damping, 1.0)  # exact: step * 1 == step
    tf.raw_ops.AssignVariableOp(resource=m, value=m_t)
    tf.raw_ops.AssignVariableOp(resource=v, value=v_t)
    tf.raw_ops.AssignVariableOp(resource=var, value=w - step)
    return tf.constant(True)  # something to group on; the assignments are the work


@tf.keras.utils.register_keras_serializable(package="metaplastic")
class MetaplasticAdam(tf.keras.optimizers.legacy.Adam):
    """Adam whose steps on binary hidden weights are damped by `1 - tanh(m |Wh|)^2`.

    Implements the metaplastic rule of Laborieux et al. (2021) as in the paper's
    reference code: the first and second moments are updated as in Adam; where
    `sign(Wh) * m_hat > 0` the step on a binary latent weight is multiplied by
    `1 - tanh(m * |Wh|)**2`, with `Wh` taken before the update. Variables that are not
    binary latent kernels (BatchNorm, float layers) and layers with `m = 0` get the
    plain legacy-Keras Adam update. With `metaplastic_variables="kernels"` every kernel
    (float ones included, `W` in place of `Wh`) gets the rule; BatchNorm variables and
    biases still get plain Adam.

    # Arguments
        learning_rate: a positive float or a `LearningRateSchedule`. The paper uses
            0.005 for MLPs and 1e-4 for the CIFAR-10 network.
        meta: the metaplasticity `m`, either one float for all binary kernels, or a
            mapping from layer name to `m`; binary layers missing from the mapping get
            `default_meta`. Paper values: 1.35 (permuted MNIST), 2.5 (stream
            Fashion-MNIST), 13 (stream CIFAR-10).
        default_meta: `m` for binary layers not named in a `meta` mapping.
        beta_1: exponential decay rate of the first moment.
        beta_2: exponential decay rate of the second moment.
        epsilon: added to `sqrt(v)`; 1e-8 as PyTorch's Adam in the reference code.
        weight_decay: L2 coefficient added to the gradient of every variable before
            the moments are updated (the reference code's `weight_decay`); when it is
            set, every variable takes the fused update kernel (undamped where m = 0).
        metaplastic_variables: `"binary"`: the rule applies to binary latent kernels
            (`is_binary_variable`); `"kernels"`: to every variable named `.../kernel`
            (`is_kernel_variable`), e.g. the float kernels of `zoo.mlp_float` as in the
            paper's full-precision comparison (Fig. 2f).
        name: name of the optimizer.
        **kwargs: passed to the legacy Keras optimizer (`clipnorm`, ...).

    # Raises
        ValueError: if `m` is negative or not finite, if `learning_rate` is not
            positive, if `metaplastic_variables` is unknown, or (when training starts)
            if a layer named in `meta` holds no metaplastic kernel among the variables
            being trained.

    # References
        - [Synaptic metaplasticity in binarized neural networks](
            https://www.nature.com/articles/s41467-021-22768-y)
    """

    def __init__(
        self,
        learning_rate: float
        | tf.keras.optimizers.schedules.LearningRateSchedule = 0.005,
        meta: float | Mapping[str, float] = 1.35,
        default_meta: float = 0.0,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        weight_decay: float = 0.0,
        metaplastic_variables: str = "binary",
        name: str = "MetaplasticAdam",
        **kwargs,
    ):
        lr = kwargs.pop("lr", learning_rate)
        if isinstance(lr, (int, float)) and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {lr!r}.")
        if isinstance(meta, Mapping):
            meta = {
                str(layer): _check_meta(value, f"meta[{layer!r}]")
                for layer, value in meta.items()
            }
        else:
            meta = _check_meta(meta, "meta")
        self.meta = meta
        self.default_meta = _check_meta(default_meta, "default_meta")
        self.weight_decay = _check_meta(weight_decay, "weight_decay")
        if metaplastic_variables not in METAPLASTIC_VARIABLES:
            raise ValueError(
                f"metaplastic_variables must be one of {METAPLASTIC_VARIABLES}, "
                f"got {metaplastic_variables!r}."
            )
        self.metaplastic_variables = metaplastic_variables
        if kwargs.pop("amsgrad", False):
            raise ValueError("MetaplasticAdam does not support amsgrad=True.")
        super().__init__(
            learning_rate=lr,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            name=name,
            **kwargs,
        )
        # Variable key -> m, filled when a variable is first seen by apply_gradients.
        self._meta_by_var: dict[object, float] = {}
        self._metaplastic_layers: set[str] = set()

    def is_metaplastic(self, var: tf.Variable) -> bool:
        """Whether `var` gets the metaplastic rule (see `metaplastic_variables`)."""
        if self.metaplastic_variables == "kernels":
            return is_kernel_variable(var)
        return is_binary_variable(var)

    def meta_for_layer(self, layer_name: str) -> float:
        """The `m` applied to the metaplastic kernel of the layer called `layer_name`."""
        if isinstance(self.meta, Mapping):
            return self.meta.get(layer_name, self.default_meta)
        return self.meta

    def _assign_meta(self, variables: Iterable[tf.Variable]) -> None:
        """Resolves `m` for every variable not seen before; checks per-layer names."""
        new = [v for v in variables if _var_key(v) not in self._meta_by_var]
        if not new:
            return
        for var in new:
            m = 0.0
            if self.is_metaplastic(var):
                layer = layer_name(var).rpartition("/")[2]
                self._metaplastic_layers.add(layer)
                m = self.meta_for_layer(layer)
            self._meta_by_var[_var_key(var)] = m
        if isinstance(self.meta, Mapping):
            unknown = sorted(set(self.meta) - self._metaplastic_layers)
            if unknown:
                binary = self.metaplastic_variables == "binary"
                raise ValueError(
                    f"meta names layers with no {'binary kernel' if binary else 'kernel'} "
                    f"among the trained variables: {unknown}; "
                    f"{'binary' if binary else 'kernel'} layers are "
                    f"{sorted(self._metaplastic_layers)}."
                )

    def apply_gradients(self, grads_and_vars, name=None, **kwargs):
        grads_and_vars = list(grads_and_vars)
        self._assign_meta(v for _, v in grads_and_vars)
        return super().apply_gradients(grads_and_vars, name=name, **kwargs)

    def _resource_apply_dense(self, grad, var, apply_state=None):
        meta = self._meta_by_var.get(_var_key(var), 0.0)
        if meta == 0.0 and not self.weight_decay:
            return super()._resource_apply_dense(grad, var, apply_state)
        # With weight decay, m = 0 variables take the fused kernel too (undamped: it is
        # Adam), so that the L2 term costs no pass over the weights of its own.

        var_device, var_dtype = var.device, var.dtype.base_dtype
        coefficients = (apply_state or {}).get(
            (var_device, var_dtype)
        ) or self._fallback_apply_state(var_device, var_dtype)
        return _metaplastic_adam_update(
            getattr(var, "latent_variable", var).handle,
            self.get_slot(var, "m").handle,
            self.get_slot(var, "v").handle,
            grad,
            coefficients["lr"],
            coefficients["beta_1_t"],
            coefficients["beta_2_t"],
            coefficients["epsilon"],
            tf.constant(meta, var_dtype),
            tf.constant(self.weight_decay, var_dtype) if self.weight_decay else None,
        )

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        if self._meta_by_var.get(_var_key(var), 0.0) == 0.0 and not self.weight_decay:
            return super()._resource_apply_sparse(grad, var, indices, apply_state)
        dense_grad = tf.math.unsorted_segment_sum(grad, indices, tf.shape(var)[0])
        return self._resource_apply_dense(dense_grad, var, apply_state)

    def get_config(self):
        meta = dict(self.meta) if isinstance(self.meta, Mapping) else self.meta
        return {
            **super().get_config(),
            "meta": meta,
            "default_meta": self.default_meta,
            "weight_decay": self.weight_decay,
            "metaplastic_variables": self.metaplastic_variables,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config.pop("amsgrad", None)
        return super().from_config(config, custom_objects=custom_objects)
