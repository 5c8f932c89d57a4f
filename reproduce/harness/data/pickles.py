"""Unpickling data files with an allow-list: only NumPy arrays, plain containers and scalars.

A pickle is a program: unpickling calls whatever global it names (``os.system`` included).
The harness unpickles one kind of file, CIFAR's python-version batches, and only after the
archive's published checksum matched (:func:`reproduce.harness.data.images.cifar.read_cifar_python_archive`).
Even then, :func:`restricted_loads` admits only the globals that rebuild NumPy arrays of plain
numbers, whichever protocol wrote them:

- every protocol: ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``
  (also under NumPy 2's ``numpy._core`` names). CIFAR's batches, written by Python 2, need no
  more: their array bytes are Python 2 strings, read as latin-1.
- protocols 0-2 written by Python 3 spell bytes as ``_codecs.encode(text, "latin1")`` (and an
  empty ``bytes`` as ``__builtin__.bytes()``): admitted only in exactly those forms;
- protocol 5: ``numpy._core.numeric._frombuffer(buffer, dtype, shape, order)``, with the
  buffer in the stream (out-of-band buffers are not accepted).

Dicts, lists, tuples, strings, bytes and numbers need no global. Any other global, a
persistent id, or a damaged stream raises :class:`~reproduce.harness.errors.DataError`
before the object is built.

Allowed globals are not enough: ``numpy.ndarray((1,), "O", buffer=<8 bytes>)`` names only
allowed ones, yet turns attacker-chosen bytes into object pointers (reading the element
crashes the process, or hands out any live object). So no array or dtype that holds Python
objects (``dtype.hasobject``) is ever built: every call the stream makes (REDUCE, NEWOBJ,
NEWOBJ_EX, INST, OBJ) and every BUILD of an array or a dtype is checked first, on the
pure-Python unpickler, whose opcodes can be intercepted (the C one's cannot). A dtype's state
must be a plain number type's: NumPy trusts it, and a malformed one crashes the process.
"""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np

from reproduce.harness.errors import DataError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

try:
    from numpy._core.numeric import _frombuffer
except ImportError:  # NumPy 1.x
    from numpy.core.numeric import _frombuffer


def latin1_bytes(text: object, encoding: object) -> bytes:
    """``_codecs.encode(text, "latin1")``, the only call protocols 0-2 make to spell ``bytes``; any other
    codec or argument is refused (a pickle could otherwise run any codec on any object)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({text!r:.40}, {encoding!r:.20}), not the latin-1 of bytes")
    return text.encode("latin1")


def empty_bytes() -> bytes:
    """``bytes()``: how protocols 0-2 spell ``b""``; with any argument (``bytes(10**12)``) the call fails."""
    return b""


ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): latin1_bytes,
    ("__builtin__", "bytes"): empty_bytes,
    ("builtins", "bytes"): empty_bytes,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class ObjectArray(pickle.UnpicklingError):
    """The pickle builds an array or a dtype that holds Python objects."""


def _refuse_objects(dtype_like: object) -> None:
    """ObjectArray if ``dtype_like`` (a dtype, or a code such as ``"O"`` or ``"u1"``) holds objects."""
    try:
        dtype = np.dtype(dtype_like)
    except Exception as error:  # noqa: BLE001 - NumPy's code parser raises TypeError, ValueError, even SyntaxError
        raise pickle.UnpicklingError(f"not a dtype: {dtype_like!r:.40} ({error})") from None
    if dtype.hasobject:
        raise ObjectArray(f"an array of dtype {dtype} (it holds Python objects)")


def _check_call(func: object, args: tuple, kwargs: dict) -> None:
    """Refuse a call that would build an object array: ``ndarray(shape, dtype, buffer, ...)``,
    ``_reconstruct(subtype, shape, dtype)``, ``_frombuffer(buffer, dtype, shape, order)`` or ``dtype(code, ...)``,
    the allowed callables that take a dtype."""
    if func is np.ndarray or func is _frombuffer:
        _refuse_objects(args[1] if len(args) > 1 else kwargs.get("dtype", float))
    elif func is _reconstruct and len(args) > 2:
        _refuse_objects(args[2])
    elif func is np.dtype and args:
        _refuse_objects(args[0])


def _plain_dtype_state(state: object) -> bool:
    """Whether ``state`` is what NumPy pickles for a plain number type (``(3, byte order, None, None, None, -1, -1,
    0)``): no fields, no sub-array, no size of its own. Data files need no other, and NumPy's ``__setstate__``
    trusts the state (a malformed one crashes the process), so every other state is refused before it runs."""
    return (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">", "|", "=")
            and state[2:5] == (None, None, None) and state[5:] == (-1, -1, 0))


class RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 - the pure-Python unpickler, for its opcode table
    """An unpickler whose ``find_class`` admits only :data:`ARRAY_GLOBALS` and that builds no object arrays."""

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

    def find_class(self, module: str, name: str):
        """The allowed object for ``module.name``; ForbiddenGlobal for anything else (nothing is imported)."""
        try:
            return ARRAY_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"{module}.{name}") from None

    def load_reduce(self):
        _check_call(self.stack[-2], self.stack[-1], {})
        super().load_reduce()
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        _check_call(self.stack[-2], self.stack[-1], {})
        super().load_newobj()
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        _check_call(self.stack[-3], self.stack[-2], self.stack[-1])
        super().load_newobj_ex()
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass, args):  # INST and OBJ (protocols 0 and 1)
        _check_call(klass, tuple(args), {})
        super()._instantiate(klass, args)

    def load_build(self):
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.ndarray):  # state: (version, shape, dtype, is_fortran, data)
            if not isinstance(state, tuple) or len(state) < 3:
                raise pickle.UnpicklingError("an array's state is not (version, shape, dtype, order, data)")
            _refuse_objects(state[2])
        if isinstance(inst, np.dtype) and not _plain_dtype_state(state):
            raise pickle.UnpicklingError(f"a dtype state {state!r:.80}, not a plain number type's")
        super().load_build()
        if isinstance(inst, (np.ndarray, np.dtype)):
            _refuse_objects(inst.dtype if isinstance(inst, np.ndarray) else inst)
    dispatch[pickle.BUILD[0]] = load_build


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
    except ObjectArray as error:
        raise DataError(
            f"{origin} is a pickle that builds {error}, which a data file never needs; it was refused "
            "before building it, replace the file with the official one."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            OverflowError, struct.error) as error:
        raise DataError(f"{origin} is not a readable data pickle ({error}); replace it with an intact copy.") from None
