"""Reader for the IDX format of MNIST and Fashion-MNIST, raw or gzip.

IDX layout (all integers big-endian):

* 4-byte magic number ``0x00 0x00 T D``: ``T`` the element type, ``D`` the
  number of dimensions;
* ``D`` unsigned 32-bit sizes;
* the elements, C order, big-endian, ``prod(sizes)`` of them.

Type codes: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
``0x0D`` float32, ``0x0E`` float64. A file starting with the gzip magic bytes
``1f 8b`` is decompressed first (whatever its name).
"""

import gzip
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ._dataset import Dataset

IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a numpy array.

    Args:
      path: the file; gzip is detected by its magic bytes ``1f 8b``.

    Returns:
      A numpy array of the file's shape ``(d_1, ..., d_D)`` and element type in
      native byte order (uint8 for MNIST images and labels).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: bad magic number (nonzero first bytes, unknown type code),
        a truncated header, or a data size that does not match the dimensions.

    References:
      Y. LeCun, C. Cortes, C. Burges, "The MNIST database of handwritten
      digits" (file format section).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: damaged gzip stream: {e}") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()}; expected 0x0000TTDD "
            f"with type code TT in {sorted(hex(c) for c in IDX_DTYPES)}"
        )
    dtype = IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
            f"file has {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX size mismatch: dimensions {shape} of {dtype.name} need "
            f"{expected} data bytes, file has {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{name} (or {name}.gz) not found in folder {folder}; download the "
        "MNIST-format files there, raw or gzipped, under their standard names"
    )


def _load_mnist_format(
    folder: str | os.PathLike,
    kind: str,
    target_names: tuple[str, ...],
    description: str,
) -> Dataset:
    if kind not in MNIST_FILES:
        raise ValueError(f"kind must be 'train' or 'test'; got {kind!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist")
    image_name, label_name = MNIST_FILES[kind]
    image_path = _find(folder, image_name)
    label_path = _find(folder, label_name)
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{image_path}: expected uint8 images of shape (m, rows, cols); got "
            f"{images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{label_path}: expected uint8 labels of shape (m,); got "
            f"{labels.dtype} {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"size mismatch: {image_path.name} holds {images.shape[0]} images but "
            f"{label_path.name} holds {labels.shape[0]} labels"
        )
    if labels.size and labels.max() >= len(target_names):
        raise ValueError(
            f"{label_path}: labels must be in 0..{len(target_names) - 1}; "
            f"found {labels.max()}"
        )
    m, rows, cols = images.shape
    return Dataset(
        X=jnp.asarray(images.reshape(m, rows * cols), dtype=jnp.float32),
        y=jnp.asarray(labels, dtype=jnp.int32),
        feature_names=None,
        target_names=target_names,
        image_shape=(rows, cols),
        description=description,
    )


def load_mnist(folder: str | os.PathLike, kind: str = "train") -> Dataset:
    """Load MNIST from IDX files in a user-given folder (no download).

    Reads ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``
    (``kind="train"``) or ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte`` (``kind="test"``), each raw or with a ``.gz``
    suffix.

    Args:
      folder: directory holding the files.
      kind: ``"train"`` or ``"test"``.

    Returns:
      ``Dataset`` with ``X`` float32 ``(m, rows * cols)`` raw pixel values 0..255
      (``(60000, 784)`` for the train part), ``y`` int32 ``(m,)`` in 0..9,
      ``image_shape == (rows, cols)``.

    Raises:
      FileNotFoundError: a file is missing (the message names it and the folder).
      ValueError: bad magic number, size mismatch between images and labels or
        with the header's dimensions, labels out of range, unknown ``kind``.

    References:
      LeCun, Cortes, Burges, "The MNIST database of handwritten digits".
    """
    return _load_mnist_format(
        folder,
        kind,
        tuple(str(d) for d in range(10)),
        "MNIST handwritten digits (LeCun, Cortes, Burges), 28x28 grey images.",
    )


def load_fashion_mnist(folder: str | os.PathLike, kind: str = "train") -> Dataset:
    """Load Fashion-MNIST from IDX files in a user-given folder (no download).

    Same file names and layout as ``load_mnist``; the 10 labels are clothing
    classes (``FASHION_MNIST_CLASSES``: T-shirt/top, Trouser, ..., Ankle boot).

    Args:
      folder: directory holding the files.
      kind: ``"train"`` or ``"test"``.

    Returns:
      ``Dataset`` with ``X`` float32 ``(m, rows * cols)`` raw pixel values 0..255,
      ``y`` int32 ``(m,)`` in 0..9, ``target_names == FASHION_MNIST_CLASSES``,
      ``image_shape == (rows, cols)``.

    Raises:
      FileNotFoundError: a file is missing (the message names it and the folder).
      ValueError: as for ``load_mnist``.

    References:
      H. Xiao, K. Rasul, R. Vollgraf (2017), "Fashion-MNIST: a Novel Image
      Dataset for Benchmarking Machine Learning Algorithms".
    """
    return _load_mnist_format(
        folder,
        kind,
        FASHION_MNIST_CLASSES,
        "Fashion-MNIST (Xiao, Rasul, Vollgraf, 2017), 28x28 grey clothing images.",
    )
