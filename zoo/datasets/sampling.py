"""Seeded, class-stratified samples of a split, for evaluations on fewer images.

The first N images of a split are no sample: CIFAR-10's test split (an image-folder
tree read class by class) starts with 1,000 airplanes, so its first 300 images measure
one class. `stratified_sample` draws N images whose classes keep their proportions
in the split (N / k each, +-1, when the k classes are equally frequent), the same ones
for the same seed.

```python
from zoo.datasets import load_dataset, sample_description, stratified_sample

cifar10 = load_dataset("cifar10")
indices = stratified_sample(cifar10.y_test, 300, seed=0)  # sorted indices
x, y = cifar10.x_test[indices], cifar10.y_test[indices]
sample_description(300, len(cifar10.y_test), seed=0, what="cifar10 test images")
# '300 of 10,000 cifar10 test images, stratified by class, seed 0'
```
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoo.validation import check_nonnegative_int, check_positive_int

__all__ = ["sample_description", "stratified_sample"]


def stratified_sample(
    labels: Sequence[int] | np.ndarray, n: int, *, seed: int
) -> np.ndarray:
    """Indices of `n` examples drawn at random within each class, classes in proportion.

    Each class `c` of `count[c]` examples gets `n * count[c] / len(labels)` of the `n`
    examples, rounded down or up (largest remainders first, ties drawn with `seed`):
    `n / k` +-1 each when the `k` classes are equally frequent. Within a class, the
    examples are drawn without replacement with `numpy.random.default_rng(seed)`.

    # Arguments
        labels: integer class labels, shape `(N,)`.
        n: how many examples to draw, >= 1.
        seed: the seed of the draw, >= 0; the same seed gives the same indices.

    # Returns
        Sorted int64 indices into `labels`; `np.arange(len(labels))` (everything, in
        order) when `n >= len(labels)`.

    # Raises
        ValueError: if `labels` are not 1-D integers, or `n` or `seed` are invalid.
    """
    n = check_positive_int(n, "n")
    seed = check_nonnegative_int(seed, "seed")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (
        labels.size == 0 or np.issubdtype(labels.dtype, np.integer)
    ):
        raise ValueError(
            f"labels must be integer class labels of shape (N,), got {labels.dtype} "
            f"{labels.shape}."
        )
    total = len(labels)
    if n >= total:
        return np.arange(total, dtype=np.int64)
    classes, inverse, counts = np.unique(
        labels, return_inverse=True, return_counts=True
    )
    rng = np.random.default_rng(seed)
    # Largest-remainder rounding of n * counts / total, in integers (no float ties).
    quotas, remainders = np.divmod(n * counts, total)
    extra = n - int(quotas.sum())
    order = np.lexsort((rng.permutation(len(classes)), -remainders))
    quotas[order[:extra]] += 1
    chosen = [
        rng.choice(np.flatnonzero(inverse == c), quota, replace=False)
        for c, quota in enumerate(quotas)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def sample_description(
    samples: int, total: int, *, seed: int | None, what: str = "images"
) -> str:
    """How an evaluation's images were chosen, for a report line.

    # Arguments
        samples: the images evaluated.
        total: the images of the split.
        seed: the seed of `stratified_sample`, or `None` if every image was used.
        what: what the images are, e.g. `"cifar10 test images"`.

    # Returns
        `"300 of 10,000 cifar10 test images, stratified by class, seed 0"`, or
        `"all 10,000 cifar10 test images"` when `samples == total`.
    """
    if samples >= total or seed is None:
        return f"all {total:,} {what}" if samples == total else f"{samples:,} {what}"
    return f"{samples:,} of {total:,} {what}, stratified by class, seed {seed}"
