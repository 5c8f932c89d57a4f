"""Which device a run uses, what it is, how much memory bandwidth it has, and torch's settings on it.

``--device auto`` takes a CUDA GPU when CuPy or torch sees one and the CPU otherwise;
``cpu`` and ``cuda[:N]`` force a choice (``cuda`` without a GPU is a
:class:`~reproduce.harness.errors.DeviceError`). ``cuda-emu`` is the emulated CUDA device
(:mod:`cuda_emu`: the CUDA kernels compiled by the host C++ compiler and run on
the CPU, every access checked, memory traffic counted); ``auto`` never picks it, only
artifacts that declare it run on it, and its times are not comparable with any real
device's (:func:`timing_comparable`). Detection never raises: CuPy >= 14
returns False from ``cupy.cuda.is_available()`` on any driver error, and every other
probe is wrapped. The chosen device and the reason for the choice are recorded.
:func:`available_devices` lists what this machine offers, with the reason for each absent one.
:func:`torch_threads`, :func:`cpu_threads` and :func:`deterministic_torch` set torch's
process-wide thread count and algorithm choice for the length of a block.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from reproduce.harness.errors import DeviceError
from reproduce.harness.paths import cache_dir

# Keep torch's CUDA check from initialising CUDA in the parent (docs/design.md, "Devices").
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")


@dataclass(frozen=True)
class Device:
    """A compute device as recorded with every result.

    ``memory_bytes`` is the device's (GPU) or machine's (CPU) total memory;
    ``peak_bandwidth_gbs`` the GPU's theoretical memory bandwidth in GB/s (1e9 B/s),
    None on the CPU, whose bandwidth is measured by :func:`cpu_bandwidth`.
    """

    kind: str
    index: int | None
    name: str
    reason: str
    memory_bytes: int | None = None
    cores: int | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    peak_bandwidth_gbs: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """``cpu``, ``cuda:N`` or ``cuda-emu``: the form ``--device`` takes."""
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    def to_json(self) -> dict:
        return asdict(self)


def _cupy():
    try:
        import cupy
    except Exception:  # noqa: BLE001 - any import failure means "no CuPy"
        return None
    return cupy


def cuda_device_count() -> int:
    """How many CUDA devices CuPy or torch can use; 0 on any error."""
    cupy = _cupy()
    if cupy is not None:
        try:
            if cupy.cuda.is_available():
                return int(cupy.cuda.runtime.getDeviceCount())
        except Exception:  # noqa: BLE001 - CuPy < 14 can raise from a broken driver
            pass
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return 0


DEVICE_SPECS = "auto, cpu, cuda, cuda:N or cuda-emu"
EMULATED = "cuda-emu"


def select_device(spec: str = "auto") -> Device:
    """The device for ``spec`` (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``cuda-emu``)."""
    spec = spec.strip().lower()
    match = re.fullmatch(r"(auto|cpu|cuda-emu|cuda)(?::(\d+))?", spec)
    if not match or (match[1] != "cuda" and match[2] is not None):
        raise DeviceError(f"--device must be {DEVICE_SPECS}, not {spec!r}")
    kind, index = match[1], int(match[2] or 0)
    if kind == "cpu":
        return describe_cpu("asked for with --device cpu")
    if kind == EMULATED:
        return describe_cuda_emu("asked for with --device cuda-emu (never chosen by auto)")
    count = cuda_device_count()
    if kind == "auto":
        if count:
            return describe_cuda(0, f"--device auto: {count} CUDA device(s) visible, took cuda:0")
        return describe_cpu("--device auto: no CUDA device visible to CuPy or torch")
    if count == 0:
        raise DeviceError("--device cuda was asked for, but neither CuPy nor torch sees a CUDA GPU; "
                          "use --device cpu (or auto), or install the 'gpu' extra on a GPU machine "
                          "(--device cuda-emu runs the CUDA kernels of the artifacts that support it on the CPU)")
    if index >= count:
        raise DeviceError(f"--device cuda:{index} was asked for, but only {count} CUDA device(s) exist")
    return describe_cuda(index, f"asked for with --device {spec}")


def timing_comparable(device: Device) -> bool:
    """Whether times measured on ``device`` say anything of a real device (not on the emulated one)."""
    return device.kind != EMULATED and device.extra.get("timing_comparable", True) is not False


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001
        return None


def describe_cpu(reason: str) -> Device:
    """The CPU as a :class:`Device` (model, usable cores, total memory, cache sizes: the CPU block shape of the
    blocked SpMV formats is chosen from them)."""
    from methods.spmv.machine import caches_measured, cpu_caches

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    caches = {"cache_bytes": cpu_caches(), "cache_source": "sysfs" if caches_measured() else "assumed"}
    return Device(kind="cpu", index=None, name=_cpu_model(), reason=reason, memory_bytes=_memory_bytes(),
                  cores=cores, extra={"machine": platform.machine(), "hostname": socket.gethostname(), **caches})


def describe_cuda(index: int, reason: str) -> Device:
    """CUDA device ``index`` as a :class:`Device`, through CuPy if present, else torch."""
    cupy = _cupy()
    if cupy is not None and cupy.cuda.is_available():
        props = cupy.cuda.runtime.getDeviceProperties(index)
        runtime = cupy.cuda.runtime
        # memoryClockRate is in kHz; DDR transfers twice per clock; bus width in bits.
        peak = 2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8 / 1e9
        return Device(
            kind="cuda", index=index, name=props["name"].decode(), reason=reason,
            memory_bytes=int(props["totalGlobalMem"]), cores=int(props["multiProcessorCount"]),
            compute_capability=f"{props['major']}.{props['minor']}",
            driver_version=_cuda_version_string(runtime.driverGetVersion()),
            cuda_version=_cuda_version_string(runtime.runtimeGetVersion()),
            peak_bandwidth_gbs=round(peak, 1) if peak > 0 else None,
            extra={"cupy": cupy.__version__},
        )
    import torch

    props = torch.cuda.get_device_properties(index)
    return Device(kind="cuda", index=index, name=props.name, reason=reason,
                  memory_bytes=int(props.total_memory), cores=int(props.multi_processor_count),
                  compute_capability=f"{props.major}.{props.minor}", cuda_version=torch.version.cuda,
                  extra={"torch": torch.__version__})


def describe_cuda_emu(reason: str) -> Device:
    """The emulated CUDA device (:mod:`cuda_emu`) as a :class:`Device`.

    ``extra`` holds the host C++ compiler and its version, the OS threads that run thread
    blocks (``workers``, ``$REPRO_CUDA_EMU_WORKERS``), the launch time-out and
    ``timing_comparable: False``. Raises DeviceError when no C++ compiler is found.
    """
    from cuda_emu import MAX_SHARED_OPTIN, NAME, BuildError, build
    from cuda_emu import device as emu

    try:
        compiler = build.compiler()
    except BuildError as err:
        raise DeviceError(str(err)) from err
    version = (build.compiler_version(compiler).splitlines() or ["unknown"])[0]
    return Device(kind=EMULATED, index=None, name=NAME, reason=reason, memory_bytes=_memory_bytes(),
                  extra={"compiler": compiler, "compiler_version": version,
                         "workers": emu.workers(), "launch_timeout_s": emu.timeout_seconds(),
                         "max_shared_per_block": MAX_SHARED_OPTIN, "sector_bytes": emu.SECTOR_BYTES,
                         "host_cpu": _cpu_model(), "timing_comparable": False,
                         "purpose": "correctness and memory traffic of CUDA kernels; its times say nothing of a GPU's"})


def available_devices() -> list[dict]:
    """What ``--device`` can take on this machine: ``{"device", "available", "name" or "why_not"}`` each.

    The CPU always; every CUDA GPU CuPy or torch sees (or one ``cuda`` entry saying there is
    none); the emulated CUDA device when a host C++ compiler is found. Never raises.
    """
    devices = [{"device": "cpu", "available": True, "name": _cpu_model()}]
    count = cuda_device_count()
    for index in range(count):
        try:
            devices.append({"device": f"cuda:{index}", "available": True, "name": describe_cuda(index, "").name})
        except Exception as err:  # noqa: BLE001 - a broken GPU is reported, not raised
            devices.append({"device": f"cuda:{index}", "available": False, "why_not": f"{type(err).__name__}: {err}"})
    if not count:
        devices.append({"device": "cuda", "available": False,
                        "why_not": "neither CuPy nor torch sees a CUDA GPU (none, no driver, or no 'gpu' extra)"})
    try:
        emulated = describe_cuda_emu("")
        devices.append({"device": EMULATED, "available": True, "name": emulated.name,
                        "compiler": emulated.extra["compiler_version"], "workers": emulated.extra["workers"],
                        "note": "never chosen by auto; for correctness and memory traffic of CUDA kernels, its times "
                                "are not comparable with a GPU's"})
    except DeviceError as err:
        devices.append({"device": EMULATED, "available": False, "why_not": str(err)})
    return devices


def _cuda_version_string(version: int) -> str:
    """CUDA's integer version (e.g. 12040) as ``12.4``."""
    return f"{version // 1000}.{version % 1000 // 10}"


@functools.cache
def _triad_kernel():
    """STREAM triad ``a = b + scalar * c``, compiled by numba, parallel over threads."""
    from numba import njit, prange

    @njit(parallel=True)
    def triad(a, b, c, scalar):
        for i in prange(a.shape[0]):
            a[i] = b[i] + scalar * c[i]

    return triad


def measure_cpu_bandwidth(n: int = 1 << 25, repeats: int = 10) -> float:
    """Sustained memory bandwidth in GB/s (1e9 B/s) by a STREAM triad over fp64 arrays.

    Counts 24 bytes per element (two reads, one write; no write-allocate), as STREAM
    does, and returns the best of ``repeats`` runs. The default ``n`` (2**25, three
    256 MiB arrays) is far beyond any CPU cache.
    """
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)
    kernel = _triad_kernel()
    kernel(a, b, c, 3.0)  # compiles and warms up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        kernel(a, b, c, 3.0)
        best = min(best, time.perf_counter() - start)
    return 24 * n / best / 1e9


def cpu_bandwidth(refresh: bool = False) -> dict:
    """This machine's measured CPU bandwidth, measured once and cached per CPU model.

    Returns ``{"triad_gbs": float, "cpu": str, "threads": int, "measured": iso-date}``.
    """
    from numba import get_num_threads

    key = re.sub(r"[^A-Za-z0-9]+", "_", f"{socket.gethostname()}_{_cpu_model()}_{get_num_threads()}")
    path = cache_dir("machine") / f"bandwidth_{key}.json"
    if path.exists() and not refresh:
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    result = {"triad_gbs": round(measure_cpu_bandwidth(), 2), "cpu": _cpu_model(),
              "threads": get_num_threads(), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)
    return result


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """Within the block, torch runs its CPU operations on ``threads`` intra-op threads, whatever the device.

    For work that always runs on the CPU (timing a small network's layers on one thread, where
    torch's threading of many small operations would mostly measure synchronisation). ``None``
    leaves torch's setting alone; the setting is restored after.
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_threads(device: Device, threads: int | None):
    """Within the block, torch uses at most ``threads`` CPU threads when ``device`` is the CPU.

    A unit's config sets ``cpu_threads``: on a shared 2-core machine, two OpenMP threads that
    busy-wait next to another busy process ran 10x slower than one thread in our measurements.
    ``None`` (or a CUDA device) leaves torch's setting alone; the setting is restored after
    (:func:`cpu_threads`).
    """
    return cpu_threads(threads if device.kind == "cpu" else None)


@contextlib.contextmanager
def deterministic_torch():
    """Within the block, torch uses deterministic algorithms only (``torch.use_deterministic_algorithms``).

    Where torch has a deterministic and a faster nondeterministic kernel, it takes the first; an
    operation with no deterministic kernel raises instead of running. With seeded generators and
    a fixed thread count, a unit then trains the same weights on each run. Restored after.
    """
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
