"""scikit-learn's 8x8 handwritten digits, bundled in its wheel, as an :class:`ImageSet` for offline runs."""

from importlib import metadata, resources
from pathlib import Path

import numpy as np

from reproduce.harness.data.images.common import DIGIT_CLASSES, ImageSet, provenance


def offline_digits() -> ImageSet:
    """scikit-learn's 1,797 8x8 handwritten digits (``load_digits``) as uint8 images.

    Returns
    -------
    ImageSet
        images uint8 ``(1797, 8, 8)`` scaled from the original 0..16 to 0..255
        (``round(v * 255 / 16)``), labels 0-9, classes ``"0"``..``"9"``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    data_file = resources.files("sklearn.datasets.data") / "digits.csv.gz"
    return ImageSet(
        images,
        digits.target.astype(np.int64),
        list(DIGIT_CLASSES),
        provenance(
            f"scikit-learn {metadata.version('scikit-learn')} sklearn.datasets.load_digits(): UCI optical "
            "recognition of handwritten digits",
            [Path(str(data_file))],
            "8x8 pixel counts 0..16 scaled to 0..255 as round(v * 255 / 16)",
        ),
    )
