"""The SpMV formats this suite compares, one plug-in each: preprocessing, executors per device, bytes per nonzero.

The HBP artifacts (``reproduce/hbp``), the asv suites (``benchmarks/``) and the pytest-benchmark
suite (``tests/benchmarks/``) all read :data:`FORMATS` instead of keeping their own lists, so a
new format is added here once. Devices are named by kind: ``"cpu"``, ``"cuda"``
(a GPU through CuPy) and ``"cuda-emu"`` (the emulated CUDA device of :mod:`cuda_emu`, which runs
the CUDA executors but cuSPARSE).

=========  ==========================================  ==========================================
format     CPU executors                                CUDA executors
=========  ==========================================  ==========================================
csr        ``csr_scipy`` (serial), ``csr_numba``         ``csr_scalar``, ``csr_vector``, ``csr_cusparse``
hbp        ``hbp_cpu`` (CPU block shape)                ``hbp_cuda`` (the paper's 512 x 4096)
regu2d     ``regu2d_cpu`` (AVX-512 slices)              ``regu2d_cuda`` (32-row slices)
=========  ==========================================  ==========================================

Every executor is a callable ``f(x) -> y`` over arrays of its device (NumPy, CuPy or the
emulated device's), made once per matrix by ``make(matrix, layout, device)``; CUDA makers take
the host CSR matrix and the host layout and upload what they read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from methods.spmv.csr import spmv_numba, spmv_scipy
from methods.spmv.hbp import GPU_BLOCK_SHAPE, HBPMatrix, cpu_block_shape, preprocess_timed
from methods.spmv.hbp_build_cuda import build_hbp_cuda
from methods.spmv.hbp_cpu import HBPCpuExecutor
from methods.spmv.regu2d import Regu2DMatrix, spmv_regu2d
from methods.spmv.regu2d import preprocess_timed as regu2d_preprocess_timed

CPU, CUDA, EMULATED = "cpu", "cuda", "cuda-emu"
DEVICES = (CPU, CUDA, EMULATED)
# Regu2D's slice height per device: the AVX-512 width on the CPU (the format's default), a warp on CUDA.
REGU2D_SLICE_HEIGHT = {CPU: None, CUDA: 32, EMULATED: 32}

Maker = Callable[[sp.csr_matrix, object, str], Callable]


@dataclass(frozen=True)
class SpmvFormat:
    """One storage format: how to build it for a device, its executors there and its size.

    Attributes
    ----------
    name : str
        Prefix of its metrics (``hbp_preprocess_ms``, ...).
    description : str
    build : callable
        ``build(matrix, device, **options) -> (layout, seconds)``: the layout for that device and
        the wall-clock seconds of its preprocessing phases, ``seconds["total"]`` among them.
    bytes_per_nonzero : callable
        ``bytes_per_nonzero(layout) -> float``: bytes of every array an SpMV reads, per nonzero.
    cpu, cuda : dict of str to Maker
        Executor name -> ``make(matrix, layout, device)``; CUDA makers also serve ``cuda-emu``.
    gpu_only : frozenset of str
        CUDA executors the emulated device does not have (cuSPARSE).
    """

    name: str
    description: str
    build: Callable[..., tuple[object, dict[str, float]]]
    bytes_per_nonzero: Callable[[object], float]
    cpu: dict[str, Maker]
    cuda: dict[str, Maker]
    gpu_only: frozenset[str] = field(default_factory=frozenset)

    def executors(self, device: str) -> dict[str, Maker]:
        """This format's executors on ``device`` (one of :data:`DEVICES`), by name."""
        if device == CPU:
            return dict(self.cpu)
        if device not in (CUDA, EMULATED):
            raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
        return {name: make for name, make in self.cuda.items() if device == CUDA or name not in self.gpu_only}


def hbp_block_shape(matrix: sp.spmatrix, device: str, itemsize: int | None = None) -> tuple[int, int]:
    """HBP's block shape on ``device``: the paper's 512 x 4096 on CUDA, :func:`cpu_block_shape` on the CPU."""
    if device != CPU:
        return GPU_BLOCK_SHAPE
    itemsize = np.dtype(matrix.dtype if np.dtype(matrix.dtype) == np.float32 else np.float64).itemsize \
        if itemsize is None else itemsize
    return cpu_block_shape(matrix.shape, itemsize)


def _copy_csr(matrix: sp.spmatrix, device: str) -> tuple[sp.csr_matrix, dict[str, float]]:
    """CSR's "preprocessing": a copy of its arrays, the floor of any format conversion."""
    matrix = sp.csr_matrix(matrix)
    start = time.perf_counter()
    copy = sp.csr_matrix((matrix.data.copy(), matrix.indices.copy(), matrix.indptr.copy()), shape=matrix.shape)
    return copy, {"total": time.perf_counter() - start}


def _csr_bytes_per_nonzero(matrix: sp.csr_matrix) -> float:
    """Values, int32 column indices and int32 row pointers per nonzero (NaN without nonzeros)."""
    if not matrix.nnz:
        return float("nan")
    return (matrix.data.itemsize * matrix.nnz + 4 * matrix.nnz + 4 * (matrix.shape[0] + 1)) / matrix.nnz


def _build_hbp(matrix: sp.spmatrix, device: str, ordering: str = "hash") -> tuple[HBPMatrix, dict[str, float]]:
    """HBP's layout for ``device``, built there: by the GPU kernels on a CUDA device (or the emulated one)."""
    shape = hbp_block_shape(matrix, device)
    if device in (CUDA, EMULATED):
        return build_hbp_cuda(matrix, ordering, *shape, device=device)
    return preprocess_timed(matrix, ordering, *shape)


def _build_regu2d(matrix: sp.spmatrix, device: str) -> tuple[Regu2DMatrix, dict[str, float]]:
    return regu2d_preprocess_timed(matrix, slice_height=REGU2D_SLICE_HEIGHT[device])


def _numba_csr(matrix, layout, device):
    out = np.empty(layout.shape[0], np.result_type(layout.dtype, np.float32))  # spmv_numba's dtype for x of it
    return lambda x: spmv_numba(layout, x, out=out)


def _regu2d_cpu(matrix, layout, device):
    out = np.empty(layout.shape[0], layout.dtype)
    return lambda x: spmv_regu2d(layout, x, out=out)


def _cuda(kind: str, csr: bool = False) -> Maker:
    """A maker of the executor class ``kind`` of :mod:`methods.spmv.cuda` (imported only when used); ``csr``: it
    takes the matrix itself, moved to the GPU as a CuPy CSR matrix there."""
    def make(matrix, layout, device):
        from methods.spmv import cuda

        if csr and device == CUDA:
            import cupyx.scipy.sparse as gpu_sparse

            layout = gpu_sparse.csr_matrix(layout)
        if kind == "CsrCusparse":  # GPU only: no device to choose
            return cuda.CsrCusparse(layout)
        return getattr(cuda, kind)(layout, device=device)

    return make


FORMATS: dict[str, SpmvFormat] = {
    "csr": SpmvFormat(
        name="csr", description="compressed sparse rows, int32 indices: the baseline",
        build=_copy_csr, bytes_per_nonzero=_csr_bytes_per_nonzero,
        cpu={"csr_scipy": lambda matrix, layout, device: (lambda x: spmv_scipy(layout, x)), "csr_numba": _numba_csr},
        cuda={"csr_scalar": _cuda("CsrScalarCuda", csr=True), "csr_vector": _cuda("CsrVectorCuda", csr=True),
              "csr_cusparse": _cuda("CsrCusparse", csr=True)},
        gpu_only=frozenset({"csr_cusparse"})),
    "hbp": SpmvFormat(
        name="hbp", description="HBP: 2D blocks, rows hashed by in-block length into warp groups (the paper's)",
        build=_build_hbp, bytes_per_nonzero=lambda layout: layout.bytes_per_nonzero(),
        cpu={"hbp_cpu": lambda matrix, layout, device: HBPCpuExecutor(layout)},
        cuda={"hbp_cuda": _cuda("HBPCuda")}),
    "regu2d": SpmvFormat(
        name="regu2d", description="Regu2D-style: adaptive 2D blocks, DP-arranged sliced ELL (the paper's baseline)",
        build=_build_regu2d, bytes_per_nonzero=lambda layout: layout.bytes_per_nonzero(),
        cpu={"regu2d_cpu": _regu2d_cpu}, cuda={"regu2d_cuda": _cuda("Regu2DCuda")}),
}
