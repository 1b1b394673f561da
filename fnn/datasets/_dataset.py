"""The ``Dataset`` record every loader and generator returns."""

from typing import NamedTuple

import jax


class Dataset(NamedTuple):
    """A data set: inputs, targets and what is known about them.

    Attributes:
      X: ``(m, n)`` float32 inputs, batch first (images flattened row by row).
      y: ``(m,)`` targets: int32 class labels for classification, float32 values
        for regression.
      feature_names: ``n`` names of the columns of ``X``, or ``None``.
      target_names: class names indexed by label, or ``None`` for regression.
      image_shape: ``(height, width)`` to view a row of ``X`` as an image
        (``X.reshape(-1, *image_shape)``), or ``None``.
      description: one paragraph on origin and content.
    """

    X: jax.Array
    y: jax.Array
    feature_names: tuple[str, ...] | None = None
    target_names: tuple[str, ...] | None = None
    image_shape: tuple[int, int] | None = None
    description: str = ""
