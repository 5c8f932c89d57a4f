"""Registers, shared memory and theoretical occupancy of every SpMV CUDA kernel, per architecture.

Compiles the exact source the loader hands CuPy (``methods.spmv.cuda_kernels.kernel_source``)
with ``nvcc -cubin --resource-usage`` for sm_87, sm_89 and sm_90 (no GPU needed), reads each
entry function's registers and static shared memory from ptxas, adds the dynamic shared memory
of the executors' default launches, and prints the occupancy the CUDA formula gives
(:mod:`methods.spmv.occupancy`)::

    python tools/cuda_occupancy.py
    python tools/cuda_occupancy.py --dtypes float64 --archs sm_90
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from methods.spmv.cuda_kernels import hbp_launch, kernel_source, value_type  # noqa: E402
from methods.spmv.hbp import GPU_BLOCK_SHAPE  # noqa: E402
from methods.spmv.occupancy import ARCHITECTURES, occupancy  # noqa: E402
from methods.spmv.regu2d import DEFAULT_BLOCK_HEIGHT  # noqa: E402

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for")
_USAGE = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")
# The executors' default launches (methods/spmv/cuda.py): threads per block, and dynamic shared bytes per dtype.
HBP_WARPS, HBP_THREADS, HBP_CHUNK = 256, 128, 1
LAUNCHES = {
    "csr_scalar": ("csr", 256, lambda dtype: 0),
    "csr_vector": ("csr", 256, lambda dtype: 0),
    "hbp_spmv": ("hbp", HBP_THREADS, lambda dtype: hbp_launch(HBP_WARPS, HBP_THREADS, GPU_BLOCK_SHAPE[0], dtype)[1]),
    "regu2d_spmv": ("regu2d", 256, lambda dtype: DEFAULT_BLOCK_HEIGHT * np.dtype(dtype).itemsize),
}


def defines(file: str, dtype) -> dict:
    """The ``#define``s the executors compile ``file`` with for ``dtype``."""
    common = {"VALUE_T": value_type(dtype)}
    if file == "hbp":
        return {**common, "CHUNK": HBP_CHUNK}
    if file == "regu2d":
        return {**common, "COL_T": "unsigned short"}
    return common


def resource_usage(source: str, arch: str) -> dict[str, tuple[int, int]]:
    """``{entry function: (registers per thread, static shared bytes)}`` of a CUDA source for ``arch``.

    Raises
    ------
    RuntimeError
        When nvcc is missing or fails (its message is included).
    """
    if shutil.which("nvcc") is None:
        raise RuntimeError("nvcc not found: the resource report needs the CUDA toolkit (not a GPU)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cu"
        path.write_text(source)
        result = subprocess.run(["nvcc", "-cubin", f"-arch={arch}", "--resource-usage", "-o", str(path.with_suffix(
            ".cubin")), str(path)], capture_output=True, text=True, timeout=300)
    if result.returncode:
        raise RuntimeError(f"nvcc failed for {arch}:\n{result.stderr}")
    usage, entry = {}, None
    for line in (result.stdout + result.stderr).splitlines():
        if match := _ENTRY.search(line):
            entry = match.group(1)
        elif entry and (match := _USAGE.search(line)):
            usage[entry] = (int(match.group(1)), int(match.group(2) or 0))
            entry = None
    return usage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", choices=sorted(ARCHITECTURES), default=sorted(ARCHITECTURES))
    parser.add_argument("--dtypes", nargs="+", choices=["float64", "float32"], default=["float64", "float32"])
    args = parser.parse_args()
    print(f"{'kernel':<12} {'dtype':<8} {'arch':<6} {'regs':>4} {'smem B':>7} {'threads':>7} {'blocks/SM':>9} "
          f"{'occupancy':>9}  limiter")
    for dtype in args.dtypes:
        for arch in args.archs:
            usage = {}
            for file in sorted({file for file, _, _ in LAUNCHES.values()}):
                usage.update(resource_usage(kernel_source(file, defines(file, dtype)), arch))
            for kernel, (_, threads, dynamic) in LAUNCHES.items():
                registers, static = usage[kernel]
                shared = static + dynamic(dtype)
                result = occupancy(arch, threads, registers, shared)
                print(f"{kernel:<12} {dtype:<8} {arch:<6} {registers:>4} {shared:>7} {threads:>7} {result.blocks:>9} "
                      f"{result.fraction:>9.1%}  {result.limiter}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
