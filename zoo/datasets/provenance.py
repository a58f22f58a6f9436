"""Where a dataset's images come from and how they were encoded, for model cards.

An accuracy is only comparable with another measured on the same images. The CIFAR-10
many users hold as an image-folder archive is a re-encoding (e.g. JPEG) of the official
images, and JPEG is lossy: `image_encoding` opens the first image of a dataset's source
and reports its format and, for a JPEG, the libjpeg quality its quantization tables
were written with (`jpeg_quality`), so that a card can say on which copy an accuracy
was measured (`encoding_note`).

```python
from zoo.datasets import load_dataset
from zoo.datasets.provenance import encoding_note, image_encoding

cifar = load_dataset("cifar10", data_dir="data")  # data/cifar10-jpeg.tar.gz
image_encoding(cifar)  # {"source": "cifar10-jpeg.tar.gz", "format": "JPEG", "jpeg_quality": 75}
```
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from zoo.datasets.container import ImageDataset
from zoo.datasets.folders import ARCHIVE_SUFFIXES, IMAGE_SUFFIXES

__all__ = ["encoding_note", "image_encoding", "jpeg_quality"]

# The luminance quantization table of the JPEG standard (ITU-T T.81, Annex K.1), in
# natural (row-major) order; libjpeg scales it by the quality setting.
_LUMINANCE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)


def _scaled_luminance(quality: int) -> tuple[int, ...]:
    """libjpeg's `jpeg_quality_scaling` applied to the standard table (baseline)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(
        min(max((value * scale + 50) // 100, 1), 255)
        for row in _LUMINANCE
        for value in row
    )


def jpeg_quality(luminance_table: Sequence[int]) -> int | None:
    """The libjpeg quality (1-100) that writes this luminance quantization table.

    # Arguments
        luminance_table: the 64 values of a JPEG's first quantization table, in natural
            (row-major) order, as `PIL.Image.open(path).quantization[0]` gives them.

    # Returns
        The quality, or `None` if no libjpeg quality writes exactly this table (an
        encoder with its own tables).
    """
    table = tuple(int(value) for value in luminance_table)
    if len(table) != 64:
        return None
    for quality in range(100, 0, -1):
        if _scaled_luminance(quality) == table:
            return quality
    return None


def _first_image(source: Path) -> tuple[str, bytes] | None:
    """The name and bytes of the first image file of an image-folder tree or archive."""
    if source.is_file() and source.name.lower().endswith(ARCHIVE_SUFFIXES):
        with tarfile.open(source) as archive:
            for member in archive:
                suffix = os.path.splitext(member.name)[1].lower()
                if member.isfile() and suffix in IMAGE_SUFFIXES:
                    return member.name, archive.extractfile(member).read()
        return None
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                return str(path), path.read_bytes()
    return None


def image_encoding(dataset: ImageDataset) -> dict:
    """How the images of a dataset were stored where it was read from.

    # Arguments
        dataset: an `ImageDataset` from `zoo.datasets.load_dataset`.

    # Returns
        A dict with `source` (the file or folder name the images were read from) and
        `format`: `"JPEG"` (with `jpeg_quality`, `None` for non-libjpeg tables), `"PNG"`
        or another image format of an image-folder source; `"IDX"` (8-bit, lossless)
        for IDX files; `None` when the source cannot be read from here (e.g.
        tensorflow-datasets).
    """
    source = Path(dataset.source) if dataset.source else None
    encoding: dict = {"source": source.name if source else None, "format": None}
    if source is None or not source.exists():
        return encoding
    found = _first_image(source)
    if found is None:
        if source.is_dir() and any(
            "idx" in path.name.lower() for path in source.iterdir()
        ):
            encoding["format"] = "IDX"
        return encoding
    from PIL import Image

    image = Image.open(io.BytesIO(found[1]))
    encoding["format"] = image.format
    if image.format == "JPEG":
        tables = getattr(image, "quantization", None) or {}
        encoding["jpeg_quality"] = jpeg_quality(tables[0]) if 0 in tables else None
    return encoding


def encoding_note(name: str, encoding: Mapping) -> str | None:
    """One sentence for a model card when the images are a lossy re-encoding.

    # Arguments
        name: the dataset's name (`cifar10`).
        encoding: a dict returned by `image_encoding`.

    # Returns
        The sentence, or `None` for lossless sources.
    """
    if encoding.get("format") != "JPEG":
        return None
    quality = encoding.get("jpeg_quality")
    how = f"JPEG quality {quality}" if quality else "JPEG"
    return (
        f"the {name} images of {encoding.get('source')} are a {how} re-encoding "
        "(lossy) of the official images: accuracies are measured on that copy and may "
        "differ on the official one"
    )
