"""An emulated CUDA device: CUDA C kernels, unchanged, compiled by the host C++ compiler and run
on the CPU with one fiber per CUDA thread; every access bounds- and race-checked, every barrier
and warp collective checked, and the 32-byte sectors of every warp instruction counted.

A device library, as CuPy is one: the SpMV executors (:mod:`methods.spmv.cuda`) run on it
through :mod:`methods.spmv.cuda_backends`, and the harness describes it as ``--device
cuda-emu``. :mod:`cuda_emu.device` has the host-side API (CuPy's shape), :mod:`cuda_emu.build`
the build and its cache, ``include/cuda_emu.h`` the CUDA language the kernels may use and
``runtime.cpp`` the execution model. docs/cuda-emulator.md explains what it proves and what not.
"""

from cuda_emu.build import BuildError
from cuda_emu.device import (
    DEVICE,
    MAX_SHARED_OPTIN,
    NAME,
    DeviceArray,
    KernelError,
    LaunchReport,
    RawKernel,
    RawModule,
    asarray,
    asnumpy,
    empty,
    recorded,
    zeros,
)

__all__ = ["DEVICE", "MAX_SHARED_OPTIN", "NAME", "BuildError", "DeviceArray", "KernelError", "LaunchReport",
           "RawKernel", "RawModule", "asarray", "asnumpy", "empty", "recorded", "zeros"]
