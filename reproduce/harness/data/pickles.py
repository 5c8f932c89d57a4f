"""Unpickling data files with an allow-list: only NumPy arrays, plain containers and scalars.

A pickle is a program: unpickling calls whatever global it names (``os.system`` included).
The harness unpickles one kind of file, CIFAR's python-version batches, and only after the
archive's published checksum matched (:func:`reproduce.harness.data.images.cifar.read_cifar_python_archive`).
Even then, :func:`restricted_loads` admits only the globals those files contain, the
three that rebuild a NumPy array (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
``numpy.dtype``; also under NumPy 2's ``numpy._core`` name). Dicts, lists, tuples, strings,
bytes and numbers need no global. Any other global, a persistent id, or a damaged stream
raises :class:`~reproduce.harness.errors.DataError` before the object is built.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from reproduce.harness.errors import DataError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` whose ``find_class`` admits only :data:`ARRAY_GLOBALS`."""

    def find_class(self, module: str, name: str):
        """The allowed object for ``module.name``; ForbiddenGlobal for anything else (nothing is imported)."""
        try:
            return ARRAY_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"{module}.{name}") from None


def restricted_loads(data: bytes, origin: str) -> object:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Strings of Python 2 pickles (CIFAR's were written by Python 2) are decoded as latin-1,
    which is how NumPy reads the raw bytes of a Python 2 array.

    Parameters
    ----------
    data : bytes
        The pickle.
    origin : str
        How messages name it, e.g. ``"cifar-10-python.tar.gz:cifar-10-batches-py/data_batch_1"``.

    Raises
    ------
    DataError
        A forbidden global (named in the message), a persistent id, or a damaged pickle.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except ForbiddenGlobal as error:
        raise DataError(
            f"{origin} is a pickle that calls {error}, which a data file never needs; it was refused "
            "without running it, replace the file with the official one."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DataError(f"{origin} is not a readable data pickle ({error}); replace it with an intact copy.") from None
