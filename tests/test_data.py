"""Tests for fnn.data: preprocessing, splits, mini-batches, run keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import data, losses


def _correlated(rng, m, n, shift=0.0):
    """(m, n) float64 data with unequal scales and correlated features."""
    A = rng.normal(size=(n, n)) + np.eye(n) * 2
    return rng.normal(size=(m, n)) @ A * np.arange(1, n + 1) + 5.0 + shift


# ------------------------------------------------------------------ preprocessing


def test_standardize_matches_the_z_score_equation():
    rng = np.random.default_rng(0)
    X = _correlated(rng, 200, 4)
    with jax.enable_x64(True):
        s = data.fit_standardize(X, eps=1e-8)
        out = np.asarray(jax.jit(s.transform)(X))
    # Reference, seed 003: (x - mu) / (sigma + eps), sigma the population std.
    mu = X.mean(axis=0)
    sigma = np.sqrt(((X - mu) ** 2).mean(axis=0))
    np.testing.assert_allclose(out, (X - mu) / (sigma + 1e-8), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), 1.0, rtol=1e-6)


def test_standardize_divides_by_std_not_variance():
    # Seed 000 writes sigma as the variance; fnn divides by the standard deviation.
    X = np.array([[0.0], [4.0], [8.0]])  # var = 32/3, std = sqrt(32/3)
    with jax.enable_x64(True):
        out = np.asarray(data.fit_standardize(X, eps=0.0).transform(X))
    np.testing.assert_allclose(out[:, 0], np.array([-4, 0, 4]) / np.sqrt(32 / 3))


@pytest.mark.parametrize("fit", [data.fit_standardize, data.fit_min_max, data.fit_zca])
def test_statistics_come_from_the_training_split_only(fit):
    rng = np.random.default_rng(1)
    X_train = _correlated(rng, 300, 3)
    X_dev = _correlated(rng, 300, 3, shift=10.0) * 3.0
    with jax.enable_x64(True):
        scaler = fit(X_train)
        refit = fit(X_dev)
        dev = np.asarray(scaler.transform(X_dev))
        dev_own = np.asarray(refit.transform(X_dev))
    # The dev set is shifted and scaled: with training statistics its
    # transformed mean is far from 0 (and differs from fitting on dev itself).
    assert np.all(np.abs(dev.mean(axis=0)) > 1.0)
    assert not np.allclose(dev, dev_own)


def test_standardize_training_stats_on_dev_are_not_zero_one():
    rng = np.random.default_rng(2)
    X_train = rng.normal(size=(500, 2))
    X_dev = rng.normal(size=(500, 2)) * 3.0 + 2.0
    with jax.enable_x64(True):
        dev = np.asarray(data.fit_standardize(X_train).transform(X_dev))
    # Expected from the training stats (~0, ~1): mean ~2, std ~3.
    np.testing.assert_allclose(dev.mean(axis=0), 2.0, atol=0.5)
    np.testing.assert_allclose(dev.std(axis=0), 3.0, atol=0.5)


@pytest.mark.parametrize("fit", [data.fit_standardize, data.fit_min_max, data.fit_zca])
def test_inverse_transform_round_trips_in_float64(fit):
    rng = np.random.default_rng(3)
    X_train = _correlated(rng, 100, 5)
    X_dev = _correlated(rng, 40, 5, shift=-3.0)
    with jax.enable_x64(True):
        scaler = fit(X_train)
        for X in (X_train, X_dev):
            back = jax.jit(scaler.inverse_transform)(scaler.transform(X))
            assert back.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(back), X, rtol=1e-10, atol=1e-10)


def test_zca_whitened_training_data_has_identity_covariance():
    rng = np.random.default_rng(4)
    X = _correlated(rng, 400, 6)
    assert np.abs(np.corrcoef(X.T) - np.eye(6)).max() > 0.1  # really correlated
    with jax.enable_x64(True):
        z = data.fit_zca(X, eps=0.0)
        out = np.asarray(z.transform(X))
        W = np.asarray(z.W)
    np.testing.assert_allclose(np.cov(out.T, ddof=1), np.eye(6), atol=1e-10)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-10)
    # ZCA (not PCA) whitening: W is symmetric and W^2 = Cov^-1.
    np.testing.assert_allclose(W, W.T, atol=1e-12)
    np.testing.assert_allclose(W @ W, np.linalg.inv(np.cov(X.T)), rtol=1e-8)


def test_zca_seed_factor_would_not_whiten():
    # Seed 003 writes W = 1/sqrt(n-1) (X X^T)^(-1/2); identity covariance needs
    # sqrt(n-1). Check fnn's W equals sqrt(m - 1) (Xc^T Xc)^(-1/2).
    rng = np.random.default_rng(5)
    X = _correlated(rng, 50, 3)
    Xc = X - X.mean(axis=0)
    lam, U = np.linalg.eigh(Xc.T @ Xc)
    inv_sqrt = U @ np.diag(lam**-0.5) @ U.T
    with jax.enable_x64(True):
        W = np.asarray(data.fit_zca(X, eps=0.0).W)
    np.testing.assert_allclose(W, np.sqrt(49) * inv_sqrt, rtol=1e-9)


def test_zca_singular_covariance_needs_eps():
    X = np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0]])  # constant second column
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match="eps > 0"):
            data.fit_zca(X, eps=0.0)
        out = np.asarray(data.fit_zca(X, eps=1e-6).transform(X))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, 1], 0.0)


def test_min_max_maps_train_to_unit_interval_and_handles_constant_columns():
    X = np.array([[1.0, 7.0, -2.0], [3.0, 7.0, 0.0], [2.0, 7.0, 2.0]])
    with jax.enable_x64(True):
        s = data.fit_min_max(X)
        out = np.asarray(s.transform(X))
        dev = np.asarray(s.transform(np.array([[5.0, 9.0, 4.0]])))
    np.testing.assert_allclose(out[:, 0], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(out[:, 1], 0.0)  # constant: x - min, no NaN
    np.testing.assert_allclose(out[:, 2], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(dev, [[2.0, 2.0, 1.5]])


def test_standardize_constant_column_is_finite():
    X = np.array([[1.0, 3.0], [2.0, 3.0], [3.0, 3.0]], dtype=np.float32)
    s = data.fit_standardize(X)
    out = s.transform(np.array([[2.0, 4.0]], dtype=np.float32))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), [[0.0, 1.0]], atol=1e-6)


def test_preprocessing_bad_shapes_raise():
    with pytest.raises(ValueError, match="X_train"):
        data.fit_standardize(np.zeros(5))
    with pytest.raises(ValueError, match="at least 2"):
        data.fit_zca(np.zeros((1, 3)))
    s = data.fit_min_max(np.arange(6.0, dtype=np.float32).reshape(3, 2))
    with pytest.raises(ValueError, match=r"\(m, 2\)"):
        s.transform(np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="eps"):
        data.fit_standardize(np.zeros((3, 2)), eps=-1.0)


def test_integer_input_is_treated_as_float32():
    s = data.fit_standardize(np.array([[0, 2], [2, 4]], dtype=np.int32))
    assert s.mean.dtype == jnp.float32
    out = s.transform(np.array([[1, 3]], dtype=np.int32))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), [[0.0, 0.0]])


# ------------------------------------------------------------------ splits


@pytest.mark.parametrize(
    "m, expected",
    [
        (100, (0.6, 0.2, 0.2)),
        (10**4, (0.6, 0.2, 0.2)),
        (10**5, (0.79, 0.105, 0.105)),
        (10**6, (0.98, 0.01, 0.01)),
        (10**8, (0.98, 0.01, 0.01)),
    ],
)
def test_default_split_ratios_follow_the_table(m, expected):
    np.testing.assert_allclose(data.default_split_ratios(m), expected)


def test_split_sizes_disjoint_and_complete(getkey):
    m = 1000
    X = np.arange(m, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(m, dtype=np.int32)
    sp = data.train_dev_test_split(getkey(), X, y)
    assert (sp.X_train.shape, sp.X_dev.shape, sp.X_test.shape) == (
        (600, 3),
        (200, 3),
        (200, 3),
    )
    ids = [np.asarray(a) for a in (sp.y_train, sp.y_dev, sp.y_test)]
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), y)
    # X rows travel with their labels.
    for Xs, ys in ((sp.X_train, sp.y_train), (sp.X_dev, sp.y_dev)):
        np.testing.assert_array_equal(np.asarray(Xs)[:, 0], np.asarray(ys))
    # Shuffled, not a slice of the original order.
    assert not np.array_equal(ids[0], np.arange(600))


def test_split_custom_ratios_and_rounding(getkey):
    tr, dv, te = data.split_indices(getkey(), 10, ratios=(0.7, 0.15, 0.15))
    # 7, 1.5, 1.5 -> 7 + 1 + 1 = 9, the leftover example goes to dev (tie order).
    assert (tr.size, dv.size, te.size) == (7, 2, 1)


@pytest.mark.parametrize(
    "ratios, match",
    [
        ((0.5, 0.5, 0.0), "> 0"),
        ((0.6, 0.3, 0.3), "sum to 1"),
        ((0.5, 0.5), r"\(train, dev, test\)"),
        ((0.98, 0.01, 0.01), "dev split empty"),
    ],
)
def test_split_ratios_are_validated(getkey, ratios, match):
    with pytest.raises(ValueError, match=match):
        data.split_indices(getkey(), 20, ratios=ratios)


def test_split_same_key_same_split(getkey):
    key = getkey()
    a = data.split_indices(key, 50)
    b = data.split_indices(key, 50)
    c = data.split_indices(getkey(), 50)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_stratified_split_keeps_class_proportions(getkey):
    counts = np.array([500, 300, 150, 50])
    y = np.repeat(np.arange(4, dtype=np.int32), counts)
    X = np.arange(y.size, dtype=np.float32)[:, None]
    sp = data.train_dev_test_split(getkey(), X, y, stratify=True)
    for part, r in ((sp.y_train, 0.6), (sp.y_dev, 0.2), (sp.y_test, 0.2)):
        got = np.bincount(np.asarray(part), minlength=4)
        assert np.all(np.abs(got - r * counts) <= 1), (got, r * counts)
    # The parts are disjoint.
    ids = np.concatenate([np.asarray(sp.X_train), np.asarray(sp.X_dev)])[:, 0]
    assert np.unique(ids).size == ids.size


def test_stratify_needs_integer_labels(getkey):
    with pytest.raises(ValueError, match="integer class labels"):
        data.train_dev_test_split(
            getkey(), np.zeros((10, 2)), np.zeros(10), stratify=True
        )
    with pytest.raises(ValueError, match="same number of rows"):
        data.train_dev_test_split(getkey(), np.zeros((10, 2)), np.zeros(9))


# ------------------------------------------------------------------ mini-batches


@pytest.mark.parametrize("n, batch_size", [(12, 4), (10, 4), (7, 1), (5, 8)])
def test_every_example_appears_exactly_once_per_epoch(getkey, n, batch_size):
    f = jax.jit(data.epoch_batches, static_argnums=(1, 2, 3))
    idx, mask = f(getkey(), n, batch_size, False)
    nb = -(-n // batch_size)
    assert idx.shape == mask.shape == (nb, batch_size)
    assert idx.dtype == jnp.int32 and mask.dtype == jnp.bool_
    idx, mask = np.asarray(idx), np.asarray(mask)
    np.testing.assert_array_equal(np.sort(idx[mask]), np.arange(n))
    assert np.all((idx >= 0) & (idx < n))  # padding is a valid index
    # Mask: all real except the last batch's tail.
    expected = np.arange(nb * batch_size).reshape(nb, batch_size) < n
    np.testing.assert_array_equal(mask, expected)


def test_drop_remainder_drops_the_partial_batch(getkey):
    idx, mask = data.epoch_batches(getkey(), 10, 4, drop_remainder=True)
    assert idx.shape == (2, 4)
    assert bool(jnp.all(mask))
    flat = np.asarray(idx).ravel()
    assert np.unique(flat).size == 8  # no repeats, 2 examples skipped


def test_epochs_differ_and_same_key_repeats(getkey):
    keys = data.run_keys(getkey())
    n, bs = 64, 16
    e0 = data.epoch_batches(data.epoch_key(keys.shuffle, 0), n, bs)[0]
    e0_again = data.epoch_batches(data.epoch_key(keys.shuffle, 0), n, bs)[0]
    e1 = data.epoch_batches(data.epoch_key(keys.shuffle, 1), n, bs)[0]
    np.testing.assert_array_equal(np.asarray(e0), np.asarray(e0_again))
    assert not np.array_equal(np.asarray(e0), np.asarray(e1))
    np.testing.assert_array_equal(np.sort(np.asarray(e1).ravel()), np.arange(n))


def test_run_keys_are_the_documented_split(getkey):
    root = getkey()
    keys = data.run_keys(root)
    ref = jax.random.split(root, 4)
    for got, want in zip(keys, ref, strict=True):
        np.testing.assert_array_equal(
            jax.random.key_data(got), jax.random.key_data(want)
        )


def test_epoch_batches_validates_arguments(getkey):
    with pytest.raises(ValueError, match="batch_size"):
        data.epoch_batches(getkey(), 10, 0)
    with pytest.raises(ValueError, match="no batch"):
        data.epoch_batches(getkey(), 3, 4, drop_remainder=True)
    with pytest.raises(ValueError, match="n must be"):
        data.epoch_batches(getkey(), 0, 4)
    with pytest.raises(TypeError, match="static"):
        data.epoch_batches(getkey(), 10, 2.5)


def test_iterate_minibatches_covers_the_epoch(getkey):
    X = np.arange(22, dtype=np.float32).reshape(11, 2)
    y = np.arange(11, dtype=np.int32)
    key = getkey()
    batches = list(data.iterate_minibatches(key, X, y, 4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 3]
    ys = np.concatenate([np.asarray(b[1]) for b in batches])
    np.testing.assert_array_equal(np.sort(ys), y)
    for Xb, yb in batches:
        np.testing.assert_array_equal(np.asarray(Xb)[:, 0], 2 * np.asarray(yb))
    # Same order as epoch_batches with the same key.
    idx, mask = data.epoch_batches(key, 11, 4)
    np.testing.assert_array_equal(ys, np.asarray(idx)[np.asarray(mask)])
    dropped = list(data.iterate_minibatches(key, X, y, 4, drop_remainder=True))
    assert [b[0].shape[0] for b in dropped] == [4, 4]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("fit", [data.fit_standardize, data.fit_min_max, data.fit_zca])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fits_refuse_non_finite_data_naming_row_and_column(fit, bad):
    X = np.random.default_rng(0).normal(size=(8, 3))
    X[5, 2] = bad
    X[6, 0] = bad
    with pytest.raises(ValueError, match=r"row 5 of X_train .*column 2"):
        fit(X)


def test_fit_standardize_stays_jittable():
    X = np.random.default_rng(0).normal(size=(8, 3))
    s = jax.jit(data.fit_standardize)(X)
    np.testing.assert_allclose(s.mean, X.mean(axis=0), rtol=1e-5, atol=1e-6)


def _check(*args, **kwargs):
    data.check_examples(*args, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_examples_finds_non_finite_inputs(bad):
    X = np.zeros((20, 3), np.float32)
    X[17, 1] = bad
    X[19, 0] = bad
    text = "NaN" if np.isnan(bad) else repr(float(bad))
    with pytest.raises(ValueError, match=rf"row 17 of X in the dev set holds {text}"):
        _check(X, name="dev set")
    with pytest.raises(ValueError, match="column 1"):
        _check(X, np.zeros(20, int), loss="cross_entropy", n_outputs=3)


def test_check_examples_names_a_position_in_image_rows():
    X = np.zeros((4, 2, 2, 1))
    X[3, 1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"row 3 of X .*\(1, 0, 0\)"):
        _check(X)


def test_check_examples_empty_set_and_row_counts():
    with pytest.raises(ValueError, match="the dev set is empty"):
        _check(np.zeros((0, 3)), np.zeros(0, int), name="dev set")
    with pytest.raises(ValueError, match=r"X has 5 rows but y has 4 in the training"):
        _check(np.zeros((5, 3)), np.zeros(4, int))
    with pytest.raises(ValueError, match="scalar"):
        _check(np.zeros((5, 3)), 1)


def test_check_examples_cross_entropy_labels():
    X = np.zeros((5, 2))
    y = np.array([0, 1, 2, 7, 1])
    with pytest.raises(ValueError, match=r"row 3 of y .* label 7, outside \[0, 3\)"):
        _check(X, y, loss="cross_entropy", n_outputs=3)
    with pytest.raises(ValueError, match=r"row 1 of y .* label -1"):
        _check(X, np.array([0, -1, 0, 0, 0]), loss="cross_entropy")
    _check(X, y, loss="cross_entropy", n_outputs=8)
    _check(X, np.eye(3)[[0, 1, 2, 0, 1]], loss=losses.cross_entropy(), n_outputs=3)
    _check(X, np.eye(3, dtype=int)[[0, 1, 2, 0, 1]], loss="cross_entropy", n_outputs=3)
    with pytest.raises(ValueError, match=r"dtype float64.*y\.astype\(int\)"):
        _check(X, y.astype(float), loss="cross_entropy", n_outputs=8)
    with pytest.raises(ValueError, match=r"shape \(5, 4\).*\(5, 3\)"):
        _check(X, np.eye(5)[:, :4], loss="cross_entropy", n_outputs=3)
    Y = np.eye(3)[[1, 1, 0, 0, 1]]
    Y[2, 0] = 2.0
    with pytest.raises(ValueError, match=r"row 2 of y .*holds 2\.0 \(column 0\)"):
        _check(X, Y, loss="cross_entropy", n_outputs=3)
    with pytest.raises(ValueError, match="shape"):
        _check(X, np.zeros((5, 3, 1)), loss="cross_entropy")


def test_check_examples_bce_targets():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"row 2 of y .* holds 2\.0, outside \[0, 1\]"):
        _check(X, np.array([0, 1, 2, 0, 1.0]), loss="bce", n_outputs=1)
    with pytest.raises(ValueError, match=r"row 4 of y .* holds NaN"):
        _check(X, np.array([0, 1, 1, 0, np.nan]), loss="bce", n_outputs=1)
    with pytest.raises(ValueError, match=r"shape \(5, 2\).*\(5, 1\) or \(5,\)"):
        _check(X, np.zeros((5, 2)), loss="bce", n_outputs=1)
    _check(X, np.array([0, 1, 1, 0, 0.5]), loss="bce", n_outputs=1)
    _check(X, np.array([0, 1, 1, 0, 1]) == 1, loss="bce", n_outputs=1)
    _check(X, np.ones((5, 4)), loss="bce", n_outputs=4)


def test_check_examples_regression_targets():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"row 3 of y in the test set holds inf"):
        _check(
            X, np.array([0, 1, 2, np.inf, 1]), loss="mse", n_outputs=1, name="test set"
        )
    with pytest.raises(ValueError, match=r"shape \(5, 2\).*\(5, 3\)"):
        _check(X, np.zeros((5, 2)), loss="huber", n_outputs=3)
    with pytest.raises(ValueError, match=r"shape \(5,\).*\(5, 3\)"):
        _check(X, np.zeros(5), loss="mse", n_outputs=3)
    with pytest.raises(ValueError, match="row 0 of y"):
        _check(X, np.full((5, 2), np.nan))
    _check(X, np.zeros(5), loss="mae", n_outputs=1)
    _check(X, np.zeros((5, 3)), loss="mse", n_outputs=np.int64(3))
    with pytest.raises(ValueError, match="unknown loss"):
        _check(X, np.zeros(5), loss="nope")
    with pytest.raises(ValueError, match="dtype"):
        _check(np.array([["a"]] * 5), np.zeros(5))


def test_check_examples_reads_a_memmap_in_blocks(tmp_path, monkeypatch):
    m, n = 1000, 7
    X = np.lib.format.open_memmap(tmp_path / "X.npy", "w+", np.float32, (m, n))
    X[:] = 1.0
    X[923, 4] = np.nan
    X.flush()
    X = np.load(tmp_path / "X.npy", mmap_mode="r")
    monkeypatch.setattr(data, "_CHUNK_ELEMENTS", 64 * n)
    seen = []
    isfinite = np.isfinite

    def spy(a):
        seen.append(a.shape)
        return isfinite(a)

    monkeypatch.setattr(np, "isfinite", spy)
    with pytest.raises(ValueError, match=r"row 923 of X .* holds NaN \(column 4\)"):
        _check(X)
    assert max(s[0] for s in seen) == 64  # never the whole array at once
    assert sum(s[0] for s in seen) == 960  # stopped at the block holding the NaN


def test_check_examples_low_precision_inputs():
    X = np.ones((6, 2), jnp.bfloat16)
    data.check_examples(X, np.zeros(6, np.int8), loss="cross_entropy", n_outputs=2)
    X[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"row 4 of X .* holds inf \(column 1\)"):
        data.check_examples(X.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match=r"row 4 of X .* holds inf"):
        data.check_examples(X.astype(np.float16))
