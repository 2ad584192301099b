"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from Debian's ``dataset-fashion-mnist`` package,
and scikit-learn's 8x8 ``load_digits`` as the small fallback, as images to be read row by row.

Debian installs the original IDX files (gzip) in ``/usr/share/datasets/fashion-mnist``:
``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``; 60,000 training and 10,000 test images of
28 x 28 grey levels, 10 classes. Install with ``apt-get install dataset-fashion-mnist``.

The IDX format (LeCun et al.): a big-endian header -- two zero bytes, a type code (``0x08``
unsigned byte), the number of dimensions ``d`` -- then ``d`` big-endian uint32 sizes, then the
data in row-major order.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxrnn.data.deps import require

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class ImageSplit(NamedTuple):
    images: np.ndarray  # (N, rows, cols) float32 in [0, 1]
    labels: np.ndarray  # (N,) int32


class ImageData(NamedTuple):
    name: str
    train: ImageSplit
    test: ImageSplit
    classes: tuple[str, ...]


def parse_idx(data: bytes) -> np.ndarray:
    """Decode one uncompressed IDX file of unsigned bytes into a ``uint8`` array.

    Raises:
      ValueError: a bad magic number, a type other than unsigned byte, or a size mismatch.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"data: not an IDX file (magic {data[:4]!r})")
    if data[2] != 0x08:
        raise ValueError(f"data: expected IDX type 0x08 (unsigned byte), got {data[2]:#04x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(data[4:header], dtype=">u4"))
    body = np.frombuffer(data, dtype=np.uint8, offset=header)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"data: header says shape {shape} ({int(np.prod(shape))} bytes), "
                         f"got {body.size} bytes of data")
    return body.reshape(shape)


def read_idx_gz(path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return parse_idx(f.read())


def fashion_mnist_root() -> Path:
    """``$JAXRNN_FASHION_MNIST`` if set, else Debian's install path."""
    return Path(os.environ.get("JAXRNN_FASHION_MNIST", DEFAULT_ROOT))


def load_fashion_mnist(root=None) -> ImageData:
    """Fashion-MNIST from the IDX files under ``root`` (default :func:`fashion_mnist_root`).

    Raises:
      FileNotFoundError: the files are missing; the message says how to install them.
    """
    root = Path(root) if root is not None else fashion_mnist_root()
    missing = [f for pair in _FILES.values() for f in pair if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {missing} not found in {root}. Install Debian's package with: "
            f"sudo apt-get install dataset-fashion-mnist  (or set JAXRNN_FASHION_MNIST to a "
            f"folder holding the four .gz IDX files); --dataset digits uses scikit-learn instead"
        )
    splits = {}
    for split, (img, lab) in _FILES.items():
        images = read_idx_gz(root / img).astype(np.float32) / 255.0
        labels = read_idx_gz(root / lab).astype(np.int32)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{root}: {img} has {images.shape[0]} images but {lab} has "
                             f"{labels.shape[0]} labels")
        splits[split] = ImageSplit(images, labels)
    return ImageData("fashion-mnist", splits["train"], splits["test"], CLASSES)


def load_digits_images(test_fraction: float = 0.25, seed: int = 0) -> ImageData:
    """scikit-learn's 1,797 handwritten digits (8 x 8, grey levels 0-16 scaled to [0, 1]),
    split at random (seeded) into train and test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a float in (0, 1), got {test_fraction!r}")
    datasets = require("sklearn.datasets", pip_name="scikit-learn",
                       purpose="the digits fallback of the fashion task")
    bunch = datasets.load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    return ImageData(
        "digits",
        ImageSplit(images[train], labels[train]),
        ImageSplit(images[test], labels[test]),
        tuple(str(d) for d in range(10)),
    )


__all__ = ["ImageSplit", "ImageData", "parse_idx", "read_idx_gz", "fashion_mnist_root",
           "load_fashion_mnist", "load_digits_images", "CLASSES"]
