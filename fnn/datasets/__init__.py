"""Data sets: bundled real sets, generated toy sets, and an IDX (MNIST) reader.

Everything is readable with no network and no dependency beyond numpy and the
standard library. Every loader and generator returns a ``Dataset`` NamedTuple
``(X, y, feature_names, target_names, image_shape, description)`` with float32
inputs ``X`` of shape ``(m, n)``, batch first, and targets ``y`` of shape ``(m,)``
(int32 class labels, float32 for regression). Generators take ``key`` first.

Bundled (``fnn/datasets/data/``, attribution in its README):
  ``load_digits`` (1797 x 64, 10 classes), ``load_breast_cancer`` (569 x 30,
  binary), ``load_diabetes`` (442 x 10, regression).
Generated: ``xor``, ``line`` [Neacșu & Vasilescu], ``two_moons``, ``two_spirals``.
Text: ``load_pydoc_chars`` (the Python documentation as character ids) and
next-character windows (``char_windows``, ``random_char_windows``).
From a user folder: ``read_idx``, ``load_mnist``, ``load_fashion_mnist``.
"""

from ._bundled import BREAST_CANCER_FEATURES as BREAST_CANCER_FEATURES
from ._bundled import DIABETES_FEATURES as DIABETES_FEATURES
from ._bundled import DIGITS_IMAGE_SHAPE as DIGITS_IMAGE_SHAPE
from ._bundled import load_breast_cancer as load_breast_cancer
from ._bundled import load_diabetes as load_diabetes
from ._bundled import load_digits as load_digits
from ._dataset import Dataset as Dataset
from ._idx import FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES
from ._idx import load_fashion_mnist as load_fashion_mnist
from ._idx import load_mnist as load_mnist
from ._idx import read_idx as read_idx
from ._text import char_ids as char_ids
from ._text import char_windows as char_windows
from ._text import decode_chars as decode_chars
from ._text import load_pydoc_chars as load_pydoc_chars
from ._text import pydoc_text as pydoc_text
from ._text import random_char_windows as random_char_windows
from ._text import split_ids as split_ids
from ._toy import line as line
from ._toy import two_moons as two_moons
from ._toy import two_spirals as two_spirals
from ._toy import xor as xor

__all__ = [
    "BREAST_CANCER_FEATURES",
    "DIABETES_FEATURES",
    "DIGITS_IMAGE_SHAPE",
    "FASHION_MNIST_CLASSES",
    "Dataset",
    "line",
    "load_breast_cancer",
    "load_diabetes",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "two_moons",
    "two_spirals",
    "xor",
    "char_ids",
    "char_windows",
    "decode_chars",
    "load_pydoc_chars",
    "pydoc_text",
    "random_char_windows",
    "split_ids",
]
