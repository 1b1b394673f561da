"""Tests for fnn.datasets: bundled loaders, toy generators, IDX reader."""

import gzip
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import datasets
from fnn.datasets import _bundled

# ------------------------------------------------------------------ bundled


def test_load_digits():
    ds = datasets.load_digits()
    assert ds.X.shape == (1797, 64) and ds.X.dtype == jnp.float32
    assert ds.y.shape == (1797,) and ds.y.dtype == jnp.int32
    X, y = np.asarray(ds.X), np.asarray(ds.y)
    assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))
    # Class counts of the UCI optdigits test part, as published in its notes.
    np.testing.assert_array_equal(
        np.bincount(y, minlength=10), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    )
    assert ds.image_shape == datasets.DIGITS_IMAGE_SHAPE == (8, 8)
    assert ds.X.reshape(-1, *ds.image_shape).shape == (1797, 8, 8)
    assert len(ds.feature_names) == 64 and len(ds.target_names) == 10
    # The first image of the file, read independently.
    with gzip.open(_bundled._data_path("digits.csv.gz"), "rt") as f:
        first = [float(v) for v in f.readline().split(",")]
    np.testing.assert_array_equal(X[0], first[:64])
    assert y[0] == first[64]


def test_load_breast_cancer():
    ds = datasets.load_breast_cancer()
    assert ds.X.shape == (569, 30) and ds.X.dtype == jnp.float32
    assert ds.y.shape == (569,) and ds.y.dtype == jnp.int32
    np.testing.assert_array_equal(np.bincount(np.asarray(ds.y)), [212, 357])
    assert ds.target_names == ("malignant", "benign")
    assert len(ds.feature_names) == 30 and ds.feature_names[0] == "mean radius"
    assert ds.feature_names[10] == "radius error"
    assert ds.feature_names[29] == "worst fractal dimension"
    assert np.all(np.asarray(ds.X) >= 0)  # sizes, areas, ratios
    # Mean area is roughly the area of a circle of the mean radius (pi r^2).
    r, area = np.asarray(ds.X[:, 0]), np.asarray(ds.X[:, 3])
    assert np.median(area / (math.pi * r**2)) == pytest.approx(1.0, abs=0.1)


def test_load_diabetes():
    ds = datasets.load_diabetes()
    assert ds.X.shape == (442, 10) and ds.X.dtype == jnp.float32
    assert ds.y.shape == (442,) and ds.y.dtype == jnp.float32
    assert ds.feature_names == datasets.DIABETES_FEATURES
    assert ds.target_names is None
    X, y = np.asarray(ds.X), np.asarray(ds.y)
    # Raw features: ages in years (19..79), sex coded 1/2.
    assert X[:, 0].min() == 19 and X[:, 0].max() == 79
    assert set(np.unique(X[:, 1])) == {1.0, 2.0}
    assert y.min() == 25 and y.max() == 346
    np.testing.assert_allclose(y[:3], [151.0, 75.0, 141.0])


def test_damaged_bundled_files_raise(tmp_path):
    good = _bundled._data_path("breast_cancer.csv").read_text().splitlines()
    bad_header = tmp_path / "bc1.csv"
    bad_header.write_text("\n".join(["569,30,benign,malignant"] + good[1:]))
    with pytest.raises(ValueError, match="header"):
        _bundled._read_breast_cancer(bad_header)
    truncated = tmp_path / "bc2.csv"
    truncated.write_text("\n".join(good[:-5]))
    with pytest.raises(ValueError, match="damaged data file bc2.csv.*569 rows"):
        _bundled._read_breast_cancer(truncated)
    ragged = tmp_path / "bc3.csv"
    ragged.write_text("\n".join(good[:-1] + [good[-1] + ",1.0"]))
    with pytest.raises(ValueError, match="different lengths"):
        _bundled._read_breast_cancer(ragged)

    with gzip.open(_bundled._data_path("digits.csv.gz"), "rt") as f:
        rows = f.read().splitlines()
    bad_label = tmp_path / "d.csv.gz"
    with gzip.open(bad_label, "wt") as f:
        f.write("\n".join(rows[:-1] + [rows[-1].rsplit(",", 1)[0] + ",12"]))
    with pytest.raises(ValueError, match="labels must be integers in 0..9"):
        _bundled._read_digits(bad_label)
    not_gzip = tmp_path / "e.csv.gz"
    not_gzip.write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match="damaged data file e.csv.gz"):
        _bundled._read_digits(not_gzip)


# ------------------------------------------------------------------ toy sets


def test_xor_exact_points():
    ds = datasets.xor()
    np.testing.assert_array_equal(np.asarray(ds.X), [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(np.asarray(ds.y), [0, 1, 1, 0])
    assert ds.X.dtype == jnp.float32 and ds.y.dtype == jnp.int32
    with pytest.raises(ValueError, match="need a key"):
        datasets.xor(n=10)


def test_xor_sampled(getkey):
    ds = datasets.xor(getkey(), 400, 0.05)
    assert ds.X.shape == (400, 2) and ds.y.shape == (400,)
    X, y = np.asarray(ds.X), np.asarray(ds.y)
    corner = np.round(X)  # noise 0.05: the nearest corner is the true one
    np.testing.assert_array_equal(y, (corner[:, 0] != corner[:, 1]).astype(int))
    assert 0.02 < np.std(X - corner) < 0.08
    np.testing.assert_array_equal(
        np.asarray(datasets.xor(getkey(), 8, 0.0).X) % 1, np.zeros((8, 2))
    )


def test_line_matches_seed_003(getkey):
    key = getkey()
    ds = datasets.line(key)
    assert ds.X.shape == (30, 1) and ds.y.shape == (30,)
    assert ds.X.dtype == jnp.float32 and ds.y.dtype == jnp.float32
    x, y = np.asarray(ds.X[:, 0], np.float64), np.asarray(ds.y, np.float64)
    assert np.all((x >= 0) & (x < 1))
    residual = y - 3 * x - 2
    assert np.all(np.abs(residual) <= 0.1 + 1e-6)
    assert residual.std() > 0.02  # the noise is really there
    # Least squares recovers slope 3 and intercept 2.
    slope, intercept = np.polyfit(x, y, 1)
    assert slope == pytest.approx(3.0, abs=0.1)
    assert intercept == pytest.approx(2.0, abs=0.06)
    # Same key, same data.
    np.testing.assert_array_equal(np.asarray(datasets.line(key).y), ds.y)
    wide = datasets.line(getkey(), n=200, half_width=0.0, x_range=(-2.0, 5.0))
    xw = np.asarray(wide.X[:, 0])
    assert xw.min() >= -2 and xw.max() < 5 and xw.min() < -1 and xw.max() > 4
    np.testing.assert_allclose(np.asarray(wide.y), 3 * xw + 2, rtol=1e-6)


def test_two_moons_lie_on_their_half_circles(getkey):
    ds = datasets.two_moons(getkey(), n=101, noise=0.0)
    X, y = np.asarray(ds.X, np.float64), np.asarray(ds.y)
    assert ds.X.shape == (101, 2) and np.bincount(y).tolist() == [51, 50]
    up, low = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(up[:, 0], up[:, 1]), 1.0, atol=1e-6)
    assert np.all(up[:, 1] >= -1e-6)
    np.testing.assert_allclose(np.hypot(low[:, 0] - 1, low[:, 1] - 0.5), 1.0, atol=1e-6)
    assert np.all(low[:, 1] <= 0.5 + 1e-6)
    assert not np.all(y[:51] == 0)  # shuffled
    noisy = np.asarray(datasets.two_moons(getkey(), n=2000, noise=0.1).X)
    r = np.hypot(noisy[:, 0], noisy[:, 1])
    assert np.abs(r - 1).max() > 0.1


def test_two_spirals_follow_the_spiral_equation(getkey):
    turns = 1.5
    ds = datasets.two_spirals(getkey(), n=300, noise=0.0, turns=turns)
    X, y = np.asarray(ds.X, np.float64), np.asarray(ds.y)
    assert ds.X.shape == (300, 2) and np.bincount(y).tolist() == [150, 150]
    r = np.hypot(X[:, 0], X[:, 1])
    assert np.all(r < 1)
    angle = np.arctan2(X[:, 1], X[:, 0])
    expected = 2 * np.pi * turns * r + np.pi * y
    # Same angle modulo 2 pi: cos of the difference is 1.
    np.testing.assert_allclose(np.cos(angle - expected), 1.0, atol=1e-4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda k: datasets.two_moons(k, n=1), "n must be >= 2"),
        (lambda k: datasets.two_spirals(k, noise=-0.1), "noise"),
        (lambda k: datasets.two_spirals(k, turns=0.0), "turns"),
        (lambda k: datasets.line(k, n=0), "n must be >= 1"),
        (lambda k: datasets.line(k, x_range=(1.0, 0.0)), "x_range"),
        (lambda k: datasets.line(k, half_width=-1.0), "half_width"),
    ],
)
def test_toy_sets_validate_arguments(getkey, call, match):
    with pytest.raises(ValueError, match=match):
        call(getkey())


# ------------------------------------------------------------------ IDX


def _idx_bytes(array, code):
    """An IDX file written by hand with struct, independently of read_idx."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    big = array.astype(array.dtype.newbyteorder(">"))
    return header + big.tobytes()


@pytest.mark.parametrize(
    "dtype, code",
    [
        ("u1", 0x08),
        ("i1", 0x09),
        ("i2", 0x0B),
        ("i4", 0x0C),
        ("f4", 0x0D),
        ("f8", 0x0E),
    ],
)
@pytest.mark.parametrize("compressed", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, code, compressed):
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    blob = _idx_bytes(a, code)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(blob) if compressed else blob)
    out = datasets.read_idx(path)
    assert out.shape == (3, 4, 5) and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, a)


def test_read_idx_errors(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    good = _idx_bytes(a, 0x08)
    cases = {
        "magic.idx": (b"\x01" + good[1:], "bad IDX magic number"),
        "type.idx": (good[:2] + b"\x07" + good[3:], "bad IDX magic number"),
        "short.idx": (good[:-1], "size mismatch"),
        "long.idx": (good + b"\x00", "size mismatch"),
        "header.idx": (good[:6], "truncated IDX header"),
    }
    for name, (blob, match) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ValueError, match=match):
            datasets.read_idx(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        datasets.read_idx(tmp_path / "missing.idx")


def _write_mnist(folder, kind, m, compressed, n_labels=None):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(m, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n_labels or m,), dtype=np.uint8)
    prefix = "train" if kind == "train" else "t10k"
    for name, a, code in (
        (f"{prefix}-images-idx3-ubyte", images, 0x08),
        (f"{prefix}-labels-idx1-ubyte", labels, 0x08),
    ):
        blob = _idx_bytes(a, code)
        if compressed:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return images, labels


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("kind", ["train", "test"])
def test_load_mnist_from_folder(tmp_path, kind, compressed):
    images, labels = _write_mnist(tmp_path, kind, 7, compressed)
    ds = datasets.load_mnist(tmp_path, kind=kind)
    assert ds.X.shape == (7, 784) and ds.X.dtype == jnp.float32
    assert ds.y.shape == (7,) and ds.y.dtype == jnp.int32
    assert ds.image_shape == (28, 28)
    np.testing.assert_array_equal(np.asarray(ds.X).reshape(7, 28, 28), images)
    np.testing.assert_array_equal(np.asarray(ds.y), labels)
    fashion = datasets.load_fashion_mnist(tmp_path, kind=kind)
    assert fashion.target_names[9] == "Ankle boot"
    np.testing.assert_array_equal(np.asarray(fashion.y), labels)


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte") as e:
        datasets.load_mnist(tmp_path)
    assert str(tmp_path) in str(e.value)
    _write_mnist(tmp_path, "train", 5, False)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        datasets.load_mnist(tmp_path)
    with pytest.raises(ValueError, match="kind"):
        datasets.load_mnist(tmp_path, kind="validation")
    sub = tmp_path / "mismatch"
    sub.mkdir()
    _write_mnist(sub, "test", 5, True, n_labels=4)
    with pytest.raises(ValueError, match="5 images but .* 4 labels"):
        datasets.load_fashion_mnist(sub, kind="test")


def test_generated_sets_accept_legacy_keys():
    # Legacy uint32 keys work as well as typed keys; same key, same data.
    a = datasets.two_moons(jax.random.PRNGKey(3), n=10)
    b = datasets.two_moons(jax.random.PRNGKey(3), n=10)
    np.testing.assert_array_equal(np.asarray(a.X), np.asarray(b.X))
