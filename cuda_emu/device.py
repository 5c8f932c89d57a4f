"""The emulated CUDA device, as the host sees it: device arrays, modules, kernels and launches.

It mirrors the part of CuPy the SpMV executors use, so that one executor code path serves a
GPU and this device:

- :func:`asarray`, :func:`empty`, :func:`zeros` make device arrays (:class:`DeviceArray`, a NumPy
  array in memory of its own with unused bytes around it); ``empty`` fills them with 0xff bytes
  (NaN, -1), as uninitialised device memory would hold anything; ``.get()`` copies to the host.
- :class:`RawModule` compiles a CUDA source (see :mod:`cuda_emu.build`);
  ``get_function(name)`` gives a :class:`RawKernel`, called as CuPy's is:
  ``kernel(grid, block, args, shared_mem=0)``.
- A launch runs to completion before the call returns (the device has one stream and never
  overlaps the host). It raises :class:`KernelError` for an out-of-bounds access, a race, a warp
  collective or barrier that not every required thread reaches, or a time-out; the message
  names the kernel, the thread, the array and index, and the source lines.
- Every launch returns a :class:`LaunchReport` (32-byte sectors per argument array); inside
  ``with recorded() as reports:`` every launch's report is also appended to ``reports``.

The emulator is for correctness and memory-traffic figures: its times say nothing of a GPU's.
Settings: ``$REPRO_CUDA_EMU_WORKERS`` (OS threads running blocks concurrently, default
``max(2, min(4, cores))``), ``$REPRO_CUDA_EMU_TIMEOUT`` (seconds per launch, default 600).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cuda_emu import build

SECTOR_BYTES = 32
WARP_SIZE = 32
MAX_THREADS_PER_BLOCK = 1024
DEFAULT_SHARED_LIMIT = 48 * 1024
# The opt-in limit of dynamic shared memory per block of the emulated device (an H100/H200's).
MAX_SHARED_OPTIN = 227 * 1024
# Unused bytes before and after every device array, so that a small overrun lands in no array.
RED_ZONE = 256
# Where device arrays start, as cudaMalloc's: sector counts depend on it (a 32-byte sector that a
# misaligned array straddles is counted twice).
ALIGNMENT = 256
NAME = "emulated CUDA device (host C++ compiler, fibers per thread)"


class KernelError(RuntimeError):
    """A kernel did something a GPU would not survive or would compute wrongly (see the message)."""


class EmulatedDevice:
    """The one emulated device; a context manager that does nothing, as ``cupy.cuda.Device`` is one."""

    id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __repr__(self) -> str:
        return "<emulated CUDA device>"


DEVICE = EmulatedDevice()


class DeviceArray(np.ndarray):
    """An array in device memory of the emulated device (a NumPy array with red zones)."""

    device = DEVICE

    def get(self) -> np.ndarray:
        """A host copy, as CuPy's ``ndarray.get``."""
        return np.array(self, copy=True).view(np.ndarray)


def empty(shape, dtype) -> DeviceArray:
    """An uninitialised device array: every byte 0xff (NaN for floats, -1 for signed integers)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = np.full(nbytes + 2 * RED_ZONE + ALIGNMENT, 0xFF, dtype=np.uint8)
    start = RED_ZONE + -(buffer.ctypes.data + RED_ZONE) % ALIGNMENT
    return buffer[start:start + nbytes].view(dtype).reshape(shape).view(DeviceArray)


def zeros(shape, dtype) -> DeviceArray:
    array = empty(shape, dtype)
    array[...] = 0
    return array


def asarray(array, dtype=None) -> DeviceArray:
    """A device copy of a host array (or the array itself if it already is one of that dtype)."""
    host = np.asarray(array, dtype=dtype)
    if isinstance(array, DeviceArray) and host.dtype == array.dtype:
        return array
    copy = empty(host.shape, host.dtype)
    copy[...] = host
    return copy


def asnumpy(array) -> np.ndarray:
    return array.get() if isinstance(array, DeviceArray) else np.asarray(array)


def workers() -> int:
    """OS threads that run thread blocks concurrently (``$REPRO_CUDA_EMU_WORKERS``)."""
    value = os.environ.get("REPRO_CUDA_EMU_WORKERS")
    return int(value) if value else max(2, min(4, os.cpu_count() or 2))


def timeout_seconds() -> float:
    return float(os.environ.get("REPRO_CUDA_EMU_TIMEOUT", "600"))


# ---- the launch record shared with runtime.cpp (every field 8 bytes) ------------------------
class _Region(ctypes.Structure):
    _fields_ = [("begin", ctypes.c_uint64), ("end", ctypes.c_uint64), ("element_size", ctypes.c_int64),
                ("writable", ctypes.c_int64), ("name", ctypes.c_char_p), ("shadow", ctypes.c_void_p),
                ("requests", ctypes.c_uint64 * 3), ("sectors", ctypes.c_uint64 * 3),
                ("block_sectors", ctypes.c_uint64)]


class _Launch(ctypes.Structure):
    _fields_ = [("entry", ctypes.c_void_p), ("args", ctypes.c_void_p), ("kernel", ctypes.c_char_p),
                ("grid", ctypes.c_uint64 * 3), ("block", ctypes.c_uint64 * 3), ("shared_bytes", ctypes.c_uint64),
                ("dynamic_shared_base", ctypes.c_void_p), ("regions", ctypes.POINTER(_Region)),
                ("n_regions", ctypes.c_int64), ("workers", ctypes.c_int64), ("seed", ctypes.c_uint64),
                ("timeout_seconds", ctypes.c_double), ("warp_instructions", ctypes.c_uint64),
                ("error_pc", ctypes.c_uint64 * 2), ("error", ctypes.c_char * 2048)]


class _ParamInfo(ctypes.Structure):
    _fields_ = [("size", ctypes.c_int), ("element_size", ctypes.c_int), ("writable", ctypes.c_int),
                ("floating", ctypes.c_int)]


@functools.cache
def _runtime() -> ctypes.CDLL:
    library = ctypes.CDLL(str(build.runtime_library()), mode=ctypes.RTLD_GLOBAL)
    library.emu_launch.argtypes = [ctypes.POINTER(_Launch)]
    library.emu_launch.restype = ctypes.c_int
    return library


@dataclass(frozen=True)
class ArrayTraffic:
    """One argument array's global-memory traffic in one launch.

    ``requests``, ``sectors``: per access kind (``load``, ``store``, ``atomic``), the warp
    instructions and the distinct 32-byte sectors each touched, summed over instructions (no
    cache reuse). ``block_sectors``: the distinct sectors each thread block touched, summed over
    blocks (perfect reuse within a block, none between blocks).
    """

    requests: dict[str, int]
    sectors: dict[str, int]
    block_sectors: int

    @property
    def sector_count(self) -> int:
        return sum(self.sectors.values())


@dataclass(frozen=True)
class LaunchReport:
    """What one launch did: geometry, warp instructions and the traffic per argument array."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    warp_instructions: int
    arrays: dict[str, ArrayTraffic] = field(default_factory=dict)

    def sector_bytes(self, reused: tuple[str, ...] = ()) -> int:
        """Bytes moved in 32-byte sectors: every warp instruction's sectors, except that the
        arrays named in ``reused`` count each sector once per thread block."""
        return SECTOR_BYTES * sum(t.block_sectors if name in reused else t.sector_count
                                  for name, t in self.arrays.items())


_recorders: list[list[LaunchReport]] = []


@contextlib.contextmanager
def recorded():
    """Collects the :class:`LaunchReport` of every launch made inside the block, in order."""
    reports: list[LaunchReport] = []
    _recorders.append(reports)
    try:
        yield reports
    finally:
        _recorders.remove(reports)


_ACCESS_KINDS = ("load", "store", "atomic")
_launch_counter = itertools.count()


class RawKernel:
    """A ``__global__`` function of a :class:`RawModule`, launched as CuPy's RawKernel is."""

    def __init__(self, module: RawModule, name: str, parameters: tuple[str, ...]):
        self.module, self.name, self.parameter_names = module, name, parameters
        library = module.library
        self._entry = ctypes.cast(getattr(library, f"emu_entry_{name}"), ctypes.c_void_p).value
        info = ctypes.POINTER(_ParamInfo)()
        arity = getattr(library, f"emu_params_{name}")(ctypes.byref(info))
        self.parameters = [info[i] for i in range(arity)]
        if arity != len(parameters):
            raise KernelError(f"{name}: read {len(parameters)} parameter names from the source, the compiler "
                              f"has {arity} parameters")
        self.max_dynamic_shared_size_bytes = DEFAULT_SHARED_LIMIT

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        """The most dynamic shared memory a launch may ask for (48 KiB unless raised, as on a GPU)."""
        return self._max_dynamic_shared

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, nbytes: int) -> None:
        # The runtime's buffer holds MAX_SHARED_OPTIN bytes: a larger launch would run past it.
        if not 0 <= nbytes <= MAX_SHARED_OPTIN:
            raise ValueError(f"{self.name}: max_dynamic_shared_size_bytes = {nbytes}; the device allows 0 to "
                             f"{MAX_SHARED_OPTIN} bytes of dynamic shared memory per block")
        self._max_dynamic_shared = int(nbytes)

    def __call__(self, grid, block, args, shared_mem: int = 0) -> LaunchReport:
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        threads = block[0] * block[1] * block[2]
        if not 0 < threads <= MAX_THREADS_PER_BLOCK:
            raise ValueError(f"{self.name}: a block of {threads} threads; the device allows 1 to "
                             f"{MAX_THREADS_PER_BLOCK}")
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise ValueError(f"{self.name}: {shared_mem} bytes of dynamic shared memory exceed the kernel's limit of "
                             f"{self.max_dynamic_shared_size_bytes} (raise max_dynamic_shared_size_bytes, up to "
                             f"{MAX_SHARED_OPTIN})")
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.name} takes {len(self.parameters)} arguments "
                            f"({', '.join(self.parameter_names)}), got {len(args)}")
        values, regions, keep = [], [], []
        for name, info, value in zip(self.parameter_names, self.parameters, args):
            if info.element_size:
                array = _device_array(self.name, name, info, value)
                shadow = np.zeros(5 * array.size, np.uint64) if info.writable else None  # see check_global
                keep.append(shadow)
                regions.append(_Region(array.ctypes.data, array.ctypes.data + array.nbytes, info.element_size,
                                       info.writable, name.encode(), None if shadow is None else shadow.ctypes.data))
                values.append(ctypes.c_void_p(array.ctypes.data))
            else:
                values.append(_scalar(self.name, name, info, value))
        pointers = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p)
                                                              for v in values])
        region_array = (_Region * max(1, len(regions)))(*regions)
        launch = _Launch(entry=self._entry, args=ctypes.cast(pointers, ctypes.c_void_p), kernel=self.name.encode(),
                         grid=(ctypes.c_uint64 * 3)(*grid), block=(ctypes.c_uint64 * 3)(*block),
                         shared_bytes=int(shared_mem), dynamic_shared_base=self.module.dynamic_shared_base,
                         regions=region_array, n_regions=len(regions), workers=workers(),
                         seed=next(_launch_counter), timeout_seconds=timeout_seconds())
        if _runtime().emu_launch(ctypes.byref(launch)):
            raise KernelError(self.module.explain(launch.error.decode(errors="replace"), list(launch.error_pc)))
        report = LaunchReport(
            kernel=self.name, grid=grid, block=block, shared_bytes=int(shared_mem),
            warp_instructions=int(launch.warp_instructions),
            arrays={r.name.decode(): ArrayTraffic(dict(zip(_ACCESS_KINDS, map(int, r.requests))),
                                                  dict(zip(_ACCESS_KINDS, map(int, r.sectors))),
                                                  int(r.block_sectors))
                    for r in region_array[:len(regions)]})
        for reports in _recorders:
            reports.append(report)
        return report


def _dims(value, what: str) -> tuple[int, int, int]:
    dims = tuple(int(v) for v in (value if isinstance(value, tuple | list) else (value,)))
    if not 1 <= len(dims) <= 3 or min(dims) < 1:
        raise ValueError(f"{what} must be 1 to 3 positive sizes, not {value!r}")
    return (*dims, 1, 1)[:3]


def _device_array(kernel: str, name: str, info: _ParamInfo, value) -> DeviceArray:
    if not isinstance(value, DeviceArray):
        raise TypeError(f"{kernel} argument {name} must be an array on the emulated device (cuda_emu.asarray), "
                        f"not {type(value).__name__}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{kernel} argument {name} must be C-contiguous")
    if info.element_size != 1 and value.itemsize != info.element_size:
        raise TypeError(f"{kernel} argument {name}: an array of {value.dtype} ({value.itemsize}-byte elements) for "
                        f"a pointer to {info.element_size}-byte elements")
    return value


def _scalar(kernel: str, name: str, info: _ParamInfo, value):
    """``value`` as the C scalar the parameter declares (a NumPy scalar must have exactly that size)."""
    if isinstance(value, np.generic) and value.itemsize != info.size:
        raise TypeError(f"{kernel} argument {name}: a {value.dtype} scalar for a {info.size}-byte parameter")
    if not info.floating and not isinstance(value, int | np.integer):
        raise TypeError(f"{kernel} argument {name}: {value!r} for an integer parameter (it would be truncated)")
    if info.floating:
        return {4: ctypes.c_float, 8: ctypes.c_double}[info.size](float(value))
    ctype = {1: ctypes.c_int8, 2: ctypes.c_int16, 4: ctypes.c_int32, 8: ctypes.c_int64}[info.size]
    bits = 8 * info.size
    if not -(1 << (bits - 1)) <= int(value) < (1 << bits):
        raise OverflowError(f"{kernel} argument {name} = {value} does not fit {info.size} bytes")
    return ctype(int(value) - (1 << bits) if int(value) >= 1 << (bits - 1) else int(value))


class RawModule:
    """A CUDA source compiled for the emulated device (as ``cupy.RawModule(code=...)``).

    ``name`` is the source's file name, used in compiler and kernel messages.
    """

    def __init__(self, code: str, name: str = "kernel.cu"):
        self.path = build.module_library(code, name)
        _runtime()
        self.library = ctypes.CDLL(str(self.path))
        self.signatures = build.kernel_signatures(code)
        self.dynamic_shared_base = ctypes.cast(self.library.emu_dynamic_shared_base, ctypes.c_void_p).value

    def get_function(self, name: str) -> RawKernel:
        if name not in self.signatures:
            raise KernelError(f"no __global__ function {name!r} in this module; it has {sorted(self.signatures)}")
        return RawKernel(self, name, self.signatures[name].parameters)

    def explain(self, message: str, pcs: list[int]) -> str:
        """``message`` with the source lines of the code addresses ``pcs`` (via addr2line, if present)
        and static shared memory named by variable (via readelf, if present)."""
        message = re.sub(r"static shared memory at byte (\d+)", self._shared_variable, message)
        lines = [line for line in (self._source_line(pc) for pc in pcs if pc) if line]
        return message + (f" [at {' and '.join(lines)}]" if lines else "")

    def _shared_variable(self, match: re.Match) -> str:
        """The runtime's "static shared memory at byte N" (an offset into the module's thread-local
        storage, where __shared__ variables live) as "__shared__ <variable> at byte <offset in it>",
        the variable being the one at or last before the offset."""
        offset = int(match[1])
        before = [symbol for symbol in self._thread_local_symbols if symbol[0] <= offset]
        if not before:
            return match[0]
        start, size, name = max(before)
        return f"__shared__ {name} at byte {offset - start}" + ("" if offset < start + size else
                                                                 f" (it has {size} bytes)")

    @functools.cached_property
    def _thread_local_symbols(self) -> list[tuple[int, int, str]]:
        """``(offset, size, demangled name)`` of the module's thread-local variables, but the dynamic buffer."""
        tool = shutil.which("readelf")
        if tool is None:
            return []
        out = subprocess.run([tool, "-sW", "-C", str(self.path)], capture_output=True, text=True, check=False).stdout
        # Num: Value Size Type Bind Vis Ndx Name
        rows = [fields for fields in (line.split(None, 7) for line in out.splitlines())
                if len(fields) == 8 and fields[3] == "TLS"]
        return sorted({(int(value, 16), int(size, 0), name) for _, value, size, _, _, _, _, name in rows
                       if name != "emu_dynamic_shared" and int(size, 0) > 0})

    def _source_line(self, offset: int) -> str | None:
        tool = shutil.which("addr2line")
        if tool is None:
            return None
        # The call's return address is one past the call: the access is the instruction before it.
        out = subprocess.run([tool, "-i", "-e", str(self.path), hex(offset - 1)], capture_output=True, text=True,
                             check=False).stdout
        # one "file:line" per inlined frame, innermost first, some with " (discriminator N)" after
        frames = [Path(re.sub(r" \(discriminator \d+\)$", "", frame)).name for frame in out.splitlines()
                  if frame and not frame.startswith("??")]
        return next((frame for frame in frames if not frame.startswith("cuda_emu.h")), None)
