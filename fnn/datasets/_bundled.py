"""Loaders for the small real data sets shipped in ``fnn/datasets/data/``.

They need no network and no dependency beyond numpy and the standard library
(``gzip``, ``csv``, ``importlib.resources``). Each loader checks the shape and
value ranges of what it read and raises ``ValueError`` naming the file when the
file is damaged. Attribution: ``fnn/datasets/data/README.md``.
"""

import csv
import gzip
import io
from importlib import resources
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ._dataset import Dataset

DIGITS_IMAGE_SHAPE = (8, 8)
"""Height and width of a digits image: a row of ``load_digits().X`` is 8x8."""

_MEASUREMENTS = (
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave points",
    "symmetry",
    "fractal dimension",
)
BREAST_CANCER_FEATURES = (
    tuple(f"mean {name}" for name in _MEASUREMENTS)
    + tuple(f"{name} error" for name in _MEASUREMENTS)
    + tuple(f"worst {name}" for name in _MEASUREMENTS)
)
"""Column names of ``load_breast_cancer().X``: 10 measurements of the cell
nuclei, as mean, standard error and worst (largest) value."""

DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


def _data_path(name: str) -> Path:
    """Path of a bundled file (inside the installed package)."""
    return Path(str(resources.files("fnn.datasets").joinpath("data", name)))


def _read_text(path: Path) -> str:
    """The text of ``path``, gunzipped when it ends in ``.gz``."""
    if not path.is_file():
        raise FileNotFoundError(f"bundled data file {path.name} not found at {path}")
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return raw.decode("ascii")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        raise ValueError(f"damaged data file {path.name}: {e}") from e


def _parse_rows(text: str, path: Path, delimiter: str | None) -> np.ndarray:
    """Rows of numbers as a float64 ``(rows, cols)`` array; ragged -> error."""
    if delimiter is None:
        rows = [line.split() for line in text.splitlines() if line.strip()]
    else:
        rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r]
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise ValueError(
            f"damaged data file {path.name}: rows have different lengths {widths}"
        )
    try:
        return np.array(rows, dtype=np.float64).reshape(len(rows), -1)
    except ValueError as e:
        raise ValueError(f"damaged data file {path.name}: {e}") from e


def _check_shape(a: np.ndarray, shape: tuple[int, int], path: Path) -> None:
    if a.shape != shape:
        raise ValueError(
            f"damaged data file {path.name}: expected {shape[0]} rows of "
            f"{shape[1]} values, got shape {a.shape}"
        )


def _labels(col: np.ndarray, n_classes: int, path: Path) -> np.ndarray:
    if not np.all((col == np.round(col)) & (col >= 0) & (col < n_classes)):
        raise ValueError(
            f"damaged data file {path.name}: labels must be integers in "
            f"0..{n_classes - 1}"
        )
    return col.astype(np.int32)


def _read_digits(path: Path) -> Dataset:
    table = _parse_rows(_read_text(path), path, ",")
    _check_shape(table, (1797, 65), path)
    X = table[:, :64]
    if not np.all((X == np.round(X)) & (X >= 0) & (X <= 16)):
        raise ValueError(
            f"damaged data file {path.name}: pixels must be integers in 0..16"
        )
    y = _labels(table[:, 64], 10, path)
    h, w = DIGITS_IMAGE_SHAPE
    return Dataset(
        X=jnp.asarray(X, dtype=jnp.float32),
        y=jnp.asarray(y),
        feature_names=tuple(f"pixel_{r}_{c}" for r in range(h) for c in range(w)),
        target_names=tuple(str(d) for d in range(10)),
        image_shape=DIGITS_IMAGE_SHAPE,
        description=(
            "Optical recognition of handwritten digits (UCI; E. Alpaydin, "
            "C. Kaynak, 1998), test part: 1797 images of 8x8 pixels, each pixel "
            "the count 0..16 of set pixels in a 4x4 block of a 32x32 bitmap; "
            "10 classes, the digits 0..9. CC BY 4.0."
        ),
    )


def _read_breast_cancer(path: Path) -> Dataset:
    text = _read_text(path)
    header, _, body = text.partition("\n")
    fields = header.strip().split(",")
    if len(fields) != 4 or fields[2:] != ["malignant", "benign"]:
        raise ValueError(
            f"damaged data file {path.name}: header must be "
            f"'569,30,malignant,benign'; got {header.strip()!r}"
        )
    try:
        m, n = int(fields[0]), int(fields[1])
    except ValueError as e:
        raise ValueError(f"damaged data file {path.name}: bad header {header}") from e
    if (m, n) != (569, 30):
        raise ValueError(
            f"damaged data file {path.name}: header announces {m} x {n}, "
            "expected 569 x 30"
        )
    table = _parse_rows(body, path, ",")
    _check_shape(table, (m, n + 1), path)
    y = _labels(table[:, n], 2, path)
    return Dataset(
        X=jnp.asarray(table[:, :n], dtype=jnp.float32),
        y=jnp.asarray(y),
        feature_names=BREAST_CANCER_FEATURES,
        target_names=tuple(fields[2:]),
        image_shape=None,
        description=(
            "Breast Cancer Wisconsin (Diagnostic) (UCI; W. H. Wolberg, W. N. "
            "Street, O. L. Mangasarian, 1995): 569 tumours, 30 real features "
            "(mean, standard error and worst value of 10 measurements of cell "
            "nuclei in a digitised image); label 0 = malignant (212), "
            "1 = benign (357). CC BY 4.0."
        ),
    )


def _read_diabetes(data_path: Path, target_path: Path) -> Dataset:
    X = _parse_rows(_read_text(data_path), data_path, None)
    _check_shape(X, (442, 10), data_path)
    t = _parse_rows(_read_text(target_path), target_path, None)
    _check_shape(t, (442, 1), target_path)
    return Dataset(
        X=jnp.asarray(X, dtype=jnp.float32),
        y=jnp.asarray(t[:, 0], dtype=jnp.float32),
        feature_names=DIABETES_FEATURES,
        target_names=None,
        image_shape=None,
        description=(
            "Diabetes (B. Efron, T. Hastie, I. Johnstone, R. Tibshirani, 2004, "
            "'Least Angle Regression'): 442 patients, 10 raw baseline features "
            "(age, sex, body mass index, mean blood pressure, six blood serum "
            "measurements s1..s6); target: a quantitative measure of disease "
            "progression one year after baseline."
        ),
    )


def load_digits() -> Dataset:
    """Load the bundled 8x8 handwritten digits (10 classes).

    Returns:
      ``Dataset`` with ``X`` float32 ``(1797, 64)``, pixel values 0..16 in row
      order of the 8x8 image (``X.reshape(-1, 8, 8)``; ``image_shape == (8, 8)``),
      ``y`` int32 ``(1797,)`` in 0..9, ``target_names`` ``"0"``..``"9"``.

    Raises:
      ValueError: the bundled file is damaged (wrong shape, values out of range).

    References:
      UCI "Optical Recognition of Handwritten Digits" (Alpaydin, Kaynak, 1998).
    """
    return _read_digits(_data_path("digits.csv.gz"))


def load_breast_cancer() -> Dataset:
    """Load the bundled Breast Cancer Wisconsin (Diagnostic) set (binary).

    Returns:
      ``Dataset`` with ``X`` float32 ``(569, 30)`` raw features, ``y`` int32
      ``(569,)`` with 0 = malignant (212 examples), 1 = benign (357),
      ``target_names == ("malignant", "benign")``.

    Raises:
      ValueError: the bundled file is damaged (header, shape or labels).

    References:
      UCI "Breast Cancer Wisconsin (Diagnostic)" (Wolberg, Street,
      Mangasarian, 1995).
    """
    return _read_breast_cancer(_data_path("breast_cancer.csv"))


def load_diabetes() -> Dataset:
    """Load the bundled diabetes regression set (raw, unscaled features).

    Returns:
      ``Dataset`` with ``X`` float32 ``(442, 10)`` (age, sex, bmi, bp, s1..s6 as
      recorded, not standardised), ``y`` float32 ``(442,)`` disease progression,
      ``target_names=None``.

    Raises:
      ValueError: a bundled file is damaged (shape or non-numeric values).

    References:
      Efron, Hastie, Johnstone, Tibshirani (2004), "Least Angle Regression".
    """
    return _read_diabetes(
        _data_path("diabetes_data_raw.csv.gz"), _data_path("diabetes_target.csv.gz")
    )
