"""Metaplastic binarized neural networks (Laborieux et al. 2021) for Keras and Larq.

Every factory takes keyword arguments only and returns a built `tf.keras.Model` that
outputs logits. Binary kernels use `SteSign(clip_value=None)` and no weight clipping, so
the metaplastic optimizer sees every latent weight's full gradient. `mlp_float` is the
full-precision network of the same shape as `mlp_meta`, the paper's float reference.

```python
import tensorflow as tf
import zoo
from zoo import mlp_meta

model = mlp_meta(hidden_units=(1024, 1024))  # 784-1024-1024-10
model.compile(
    optimizer=tf.keras.optimizers.legacy.Adam(0.005),
    loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
model = zoo.vgg16_meta(pretrained=True)  # trained on CIFAR-10, sha256-verified
zoo.model_names()  # every registered factory: ("mlp_float", "mlp_meta", ...)
```

Modules, lower first (each imports only modules before it in this list; none imports
`training`): `validation`, `registry`, `datasets`, `precision`, `layers`, `saved_model`,
`model_directory`, `pretrained`, `weights`, `mlp` and `vgg` (the factories, which
register themselves), `export` (Larq Compute Engine), `publishing` (package and archive
pretrained models), `cli`.
"""

import os
import sys

if "tensorflow" not in sys.modules:  # hide TensorFlow's start-up INFO lines
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from zoo.mlp import mlp_float, mlp_meta  # noqa: E402
from zoo.pretrained import (  # noqa: E402
    load_pretrained,
    pretrained_models,
    register_pretrained,
)
from zoo.publishing import archive_pretrained, package_pretrained  # noqa: E402
from zoo.registry import get_model, model_names  # noqa: E402
from zoo.vgg import vgg16_meta, vgg_small_meta  # noqa: E402

__all__ = [
    "archive_pretrained",
    "get_model",
    "load_pretrained",
    "mlp_float",
    "mlp_meta",
    "model_names",
    "package_pretrained",
    "pretrained_models",
    "register_pretrained",
    "vgg16_meta",
    "vgg_small_meta",
]
