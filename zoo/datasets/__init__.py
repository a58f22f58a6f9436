"""Image classification datasets, read offline first: the data the zoo's models learn.

`load_dataset` returns an `ImageDataset`: float32 images in [0, 1] of shape (N, H, W, C)
and int64 labels. It looks for the data, in order, in an explicit `data_dir`, in the
directory named by `$METAPLASTIC_DATA_DIR`, and last in tensorflow-datasets (which
downloads when online). A data directory holds the conventional sub-folders `mnist/`,
`fashion-mnist/` (IDX files, gzipped or not) and `cifar10/` (an image-folder tree
`{train,test}/<class>/*`) or the archive `cifar10-jpeg.tar.gz`. Any other image-folder
tree, or a `.tar.gz` of one, loads by passing its path as the name. Archives are
extracted once into a cache directory (`$METAPLASTIC_CACHE_DIR`, default
`~/.cache/metaplastic_zoo`), and decoded images are cached there as `.npy`.

One source per module: `zoo.datasets.idx` (IDX files), `zoo.datasets.folders` (image
folders and their archives), `zoo.datasets.cache` (the extraction and decoding cache),
`zoo.datasets.tfds` (tensorflow-datasets); `zoo.datasets.catalog` knows the datasets by
name and the order of the sources; `zoo.datasets.container` holds `ImageDataset`. The
`tf.data` pipelines that feed a dataset to Keras are in `training.data`.
`zoo.datasets.sampling` draws seeded, class-stratified samples for evaluations on
fewer images (`stratified_sample`), never the first N of a split, which may be sorted
by class.
`zoo.datasets.provenance` says how a source stored its images (format, JPEG quality),
so that model cards say on which copy of a dataset an accuracy was measured.

!!! example
    ```python
    from zoo.datasets import load_dataset, stratified_sample

    mnist = load_dataset("mnist")  # or load_dataset("mnist", data_dir="data")
    mnist.x_train.shape            # (60000, 28, 28, 1)
    shapes = load_dataset("path/to/shapes.tar.gz")  # train/<class>/*, test/<class>/*
    some = mnist.subset(test_indices=stratified_sample(mnist.y_test, 500, seed=0))
    ```
"""

from zoo.datasets.cache import CACHE_DIR_ENV, DEFAULT_CACHE_DIR
from zoo.datasets.catalog import DATA_DIR_ENV, DATASETS, canonical_name, load_dataset
from zoo.datasets.container import DataError, ImageDataset
from zoo.datasets.idx import read_idx
from zoo.datasets.sampling import sample_description, stratified_sample

__all__ = [
    "CACHE_DIR_ENV",
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_CACHE_DIR",
    "DataError",
    "ImageDataset",
    "canonical_name",
    "load_dataset",
    "read_idx",
    "sample_description",
    "stratified_sample",
]
