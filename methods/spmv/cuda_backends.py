"""The devices the CUDA SpMV executors run on: a GPU through CuPy, or the emulated CUDA device.

Both give the executors (:mod:`methods.spmv.cuda`) the same few operations, so one code path
packs the arguments, sizes the launches, zeroes the counters and merges on either:

- ``kind``: ``"cuda"`` or ``"cuda-emu"``; ``device()``: the current device (a context manager,
  compared with an array's ``.device``);
- ``asarray``, ``empty``, ``zeros``, ``asnumpy``; ``zero(array)``: zero device memory before a
  launch (on the GPU, ``cudaMemsetAsync`` on the current stream); ``synchronize()``: wait for
  the current stream (the emulated device's launches return when done);
- ``kernel(file, defines, name)``: a compiled kernel, called as ``kernel(grid, block, args,
  shared_mem=...)``; ``allow_shared(kernel, nbytes, what)``: lets a kernel use ``nbytes`` of
  dynamic shared memory per block, or raises ValueError naming ``what`` needs it.

:func:`backend` returns the one for a device kind; a GPU backend on a machine without CuPy or a
GPU (or an emulated device without a host compiler) raises
:class:`~methods.errors.DeviceUnavailableError` saying what is missing.
"""

from __future__ import annotations

import functools

import numpy as np

from methods.errors import DeviceUnavailableError
from methods.spmv.cuda_kernels import DEFAULT_SHARED_LIMIT, kernel_source

DEVICE_KINDS = ("cuda", "cuda-emu")


def _cupy():
    """CuPy, if it imports and sees a GPU; otherwise a DeviceUnavailableError that says what to do."""
    try:
        import cupy
    except ImportError as exc:
        raise DeviceUnavailableError("CUDA SpMV needs CuPy: install the 'gpu' extra (pip install cupy-cuda12x) "
                          "on a machine with an NVIDIA GPU, or use --device cuda-emu") from exc
    if not cupy.cuda.is_available():
        raise DeviceUnavailableError("CUDA SpMV needs a CUDA GPU, and CuPy sees none here (no device or no driver); "
                          "run it on a GPU machine, or on the emulated device (--device cuda-emu)")
    return cupy


class CupyBackend:
    """A CUDA GPU through CuPy (kernels compiled by NVRTC, cached by CuPy in ``~/.cupy/kernel_cache``)."""

    kind = "cuda"

    def __init__(self):
        self.cupy = _cupy()

    def device(self):
        return self.cupy.cuda.Device()

    def asarray(self, array, dtype=None):
        return self.cupy.asarray(array, dtype=dtype)

    def empty(self, n: int, dtype):
        return self.cupy.empty(n, dtype=dtype)

    def zeros(self, n: int, dtype):
        return self.cupy.zeros(n, dtype=dtype)

    def asnumpy(self, array) -> np.ndarray:
        return self.cupy.asnumpy(array)

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()

    def zero(self, array) -> None:
        self.cupy.cuda.runtime.memsetAsync(array.data.ptr, 0, array.nbytes,
                                           self.cupy.cuda.get_current_stream().ptr)

    def kernel(self, file: str, defines: dict, name: str):
        return _cupy_module(file, tuple(sorted((str(k), str(v)) for k, v in defines.items()))).get_function(name)

    def allow_shared(self, kernel, nbytes: int, what: str) -> None:
        if nbytes <= DEFAULT_SHARED_LIMIT:
            return
        runtime = self.cupy.cuda.runtime
        limit = runtime.deviceGetAttribute(runtime.cudaDevAttrMaxSharedMemoryPerBlockOptin, self.device().id)
        if nbytes > limit:
            raise ValueError(f"{what} need {nbytes} bytes of shared memory per thread block; this device allows "
                             f"{limit}")
        # Only ever raised: executors with the same defines share this kernel.
        if kernel.max_dynamic_shared_size_bytes < nbytes:
            kernel.max_dynamic_shared_size_bytes = nbytes


@functools.cache
def _cupy_module(file: str, defines: tuple[tuple[str, str], ...]):
    """CuPy's RawModule of ``kernels/<file>.cu`` with ``defines`` prepended, once per (file, defines)."""
    import cupy

    return cupy.RawModule(code=kernel_source(file, dict(defines)))


class EmulatedBackend:
    """The emulated CUDA device (:mod:`cuda_emu`): the same kernels, run on the CPU and checked."""

    kind = "cuda-emu"

    def __init__(self):
        import cuda_emu

        self.emu = cuda_emu
        try:
            cuda_emu.build.compiler()
        except cuda_emu.BuildError as err:
            raise DeviceUnavailableError(str(err)) from err

    def device(self):
        return self.emu.DEVICE

    def asarray(self, array, dtype=None):
        return self.emu.asarray(array, dtype=dtype)

    def empty(self, n: int, dtype):
        return self.emu.empty(n, dtype)

    def zeros(self, n: int, dtype):
        return self.emu.zeros(n, dtype)

    def asnumpy(self, array) -> np.ndarray:
        return self.emu.asnumpy(array)

    def synchronize(self) -> None:
        pass

    def zero(self, array) -> None:
        array[...] = 0

    def kernel(self, file: str, defines: dict, name: str):
        return _emulated_module(file, tuple(sorted((str(k), str(v)) for k, v in defines.items()))).get_function(name)

    def allow_shared(self, kernel, nbytes: int, what: str) -> None:
        if nbytes > self.emu.MAX_SHARED_OPTIN:
            raise ValueError(f"{what} need {nbytes} bytes of shared memory per thread block; this device allows "
                             f"{self.emu.MAX_SHARED_OPTIN}")
        kernel.max_dynamic_shared_size_bytes = max(kernel.max_dynamic_shared_size_bytes, nbytes)


@functools.cache
def _emulated_module(file: str, defines: tuple[tuple[str, str], ...]):
    """The emulated device's module of ``kernels/<file>.cu`` with ``defines`` prepended.

    DeviceUnavailableError if it does not build (the compiler's messages say why).
    """
    import cuda_emu

    try:
        return cuda_emu.RawModule(kernel_source(file, dict(defines)), f"{file}.cu")
    except cuda_emu.BuildError as err:
        raise DeviceUnavailableError(str(err)) from err


def backend(kind: str = "cuda"):
    """The backend of device kind ``kind`` (``cuda`` or ``cuda-emu``)."""
    if kind == CupyBackend.kind:
        return CupyBackend()
    if kind == EmulatedBackend.kind:
        return EmulatedBackend()
    raise ValueError(f"CUDA executors run on {' or '.join(DEVICE_KINDS)}, not {kind!r}")
