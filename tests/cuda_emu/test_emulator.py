"""The emulated CUDA device (cuda_emu): semantics, checks, traffic counts and builds.

- Semantics: small kernels written here, each checked against NumPy and CUDA's definitions:
  built-in variables, barriers and shared memory (static and dynamic, past 48 KiB), shuffles
  and votes, __syncwarp, atomics across concurrently running blocks, __ldg, scalar arguments.
- Checks: out-of-bounds accesses, collectives and barriers that not every thread reaches,
  deadlocks, shared-memory and global races, uninitialised data, the time limit and argument
  types must each be reported with the kernel's name and what went wrong.
- Deliberately broken copies of the production kernels (methods/spmv/kernels/*.cu, derived by
  string replacement from the exact text the executors compile) must be reported.
- Traffic: sector counts of kernels whose counts follow by hand from the 32-byte sector rule.
- Builds: cached by content, rebuilt on any change, compiler errors reported.

Needs only a host C++ compiler; every test is marked ``cuda_emu``.
"""

import os
import re
import shutil
import time

import numpy as np
import pytest
import scipy.sparse as sp

import cuda_emu
from methods.spmv import cuda, cuda_backends, cuda_kernels
from methods.spmv.hbp import build_hbp
from methods.spmv.regu2d import build_regu2d

pytestmark = [
    pytest.mark.cuda_emu,
    pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                       reason="the emulated CUDA device needs a host C++ compiler ($CXX or g++)"),
]

# Which of two racing accesses comes first depends on the schedule, so a race may be reported
# at either; that it is reported, and between which source lines, does not.
ANY_RACE = r"(read-after-write|write-after-read|write-after-write) race"


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_emu_cache")


@pytest.fixture(autouse=True)
def _kernels_built_once(module_cache, monkeypatch):
    """One build cache for this module, so that each source compiles once rather than once per test
    (the suite's own autouse fixture gives every test an empty cache)."""
    monkeypatch.setenv("REPRO_CACHE", str(module_cache))


def kernel(source: str, name: str, file: str = "test.cu") -> cuda_emu.RawKernel:
    return cuda_emu.RawModule(source, file).get_function(name)


def kernel_error(function: cuda_emu.RawKernel, grid, block, args, shared_mem: int = 0) -> str:
    """The message of the KernelError that the launch must raise; it must start with the kernel's name."""
    with pytest.raises(cuda_emu.KernelError) as error:
        function(grid, block, args, shared_mem=shared_mem)
    message = str(error.value)
    assert message.startswith(f"{function.name}: "), message
    return message


def line_of(source: str, text: str) -> int:
    """The 1-based number of the one line of ``source`` that contains ``text``."""
    lines = [number for number, line in enumerate(source.splitlines(), 1) if text in line]
    assert len(lines) == 1, f"{text!r} is on lines {lines}"
    return lines[0]


def replace(old: str, new: str, occurrence: int | None = None):
    """An edit: ``old`` (which must occur exactly once, or at least ``occurrence + 1`` times) made ``new``."""
    def edit(text: str) -> str:
        starts = [match.start() for match in re.finditer(re.escape(old), text)]
        if occurrence is None:
            assert len(starts) == 1, f"{old!r} occurs {len(starts)} times"
        else:
            assert len(starts) > occurrence, f"{old!r} occurs {len(starts)} times"
        start = starts[occurrence or 0]
        return text[:start] + new + text[start + len(old):]
    return edit


def without(source: str, text: str) -> str:
    """``source`` with the one occurrence of ``text`` removed (the line stays, so line numbers do)."""
    return replace(text, "")(source)


# ---- built-in variables --------------------------------------------------------------------------
BUILTINS = r"""
extern "C" __global__ void builtins(int* ids, int* thread, int* block, int* dims)
{
    const int threads = blockDim.x * blockDim.y * blockDim.z;
    const int block_id = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int id = block_id * threads + threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    ids[id] = id;
    thread[3 * id] = threadIdx.x;
    thread[3 * id + 1] = threadIdx.y;
    thread[3 * id + 2] = threadIdx.z;
    block[3 * id] = blockIdx.x;
    block[3 * id + 1] = blockIdx.y;
    block[3 * id + 2] = blockIdx.z;
    const int all[7] = {(int)blockDim.x, (int)blockDim.y, (int)blockDim.z, (int)gridDim.x, (int)gridDim.y,
                        (int)gridDim.z, warpSize};
    for (int k = 0; k < 7; ++k) {
        dims[7 * id + k] = all[k];
    }
}
"""


def _unravel(linear: np.ndarray, dims: tuple[int, int, int]) -> np.ndarray:
    return np.stack([linear % dims[0], linear // dims[0] % dims[1], linear // (dims[0] * dims[1])], axis=1)


@pytest.mark.parametrize(("grid", "block"), [((5,), (64,)), ((3, 2), (8, 4)), ((2, 3, 2), (4, 3, 5)),
                                             ((1, 1, 3), (1, 2, 1))])
def test_builtin_variables_over_1d_to_3d_grids_and_blocks(grid, block):
    grid3, block3 = (*grid, 1, 1)[:3], (*block, 1, 1)[:3]
    threads = int(np.prod(block3))
    n = threads * int(np.prod(grid3))
    ids, thread, block_ids, dims = (cuda_emu.empty(k * n, np.int32) for k in (1, 3, 3, 7))
    kernel(BUILTINS, "builtins")(grid, block, (ids, thread, block_ids, dims))
    linear = np.arange(n)
    np.testing.assert_array_equal(ids.get(), linear)
    np.testing.assert_array_equal(thread.get().reshape(n, 3), _unravel(linear % threads, block3))
    np.testing.assert_array_equal(block_ids.get().reshape(n, 3), _unravel(linear // threads, grid3))
    np.testing.assert_array_equal(dims.get().reshape(n, 7), np.tile([*block3, *grid3, 32], (n, 1)))


# ---- shared memory and __syncthreads -------------------------------------------------------------
BLOCK_REVERSE = r"""
#define BLOCK 128
extern "C" __global__ void block_reverse(const float* x, float* y)
{
    __shared__ float tile[BLOCK];
    const int t = threadIdx.x, base = blockIdx.x * BLOCK;
    tile[t] = x[base + t];
    __syncthreads();
    y[base + t] = tile[BLOCK - 1 - t];
}
"""

# A __shared__ scalar, written by one thread and read by all: accesses the host compiler can see
# are in bounds, which the instrumentation must not skip.
BROADCAST_FIRST = r"""
extern "C" __global__ void broadcast_first(const int* x, int* y)
{
    __shared__ int first;
    if (threadIdx.x == 0) {
        first = x[blockIdx.x];
    }
    __syncthreads();
    y[blockIdx.x * blockDim.x + threadIdx.x] = first;
}
"""

SHARED_ATOMIC_SUM = r"""
extern "C" __global__ void block_sum(const int* x, int* sums)
{
    __shared__ int total;
    if (threadIdx.x == 0) {
        total = 0;
    }
    __syncthreads();
    atomicAdd(&total, x[blockIdx.x * blockDim.x + threadIdx.x]);
    __syncthreads();
    if (threadIdx.x == 0) {
        sums[blockIdx.x] = total;
    }
}
"""

# Every thread reads s[0]; after a barrier thread 0 reads and writes it: ordered after all reads.
REREAD_THEN_WRITE = r"""
extern "C" __global__ void reread_then_write(const int* x, int* y)
{
    __shared__ int s[64];
    const int t = threadIdx.x;
    s[t] = x[t];
    __syncthreads();
    const int first = s[0];
    __syncthreads();
    if (t == 0) {
        s[0] = s[0] + 1;
    }
    __syncthreads();
    y[t] = first + s[0];
}
"""

SHARED_REVERSE = r"""
extern "C" __global__ void reverse_in_shared(const int n, const double* x, double* y)
{
    extern __shared__ double buffer[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        buffer[i] = x[i];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        y[i] = buffer[n - 1 - i];
    }
}
"""


def test_syncthreads_orders_a_static_shared_array():
    x = np.random.default_rng(0).standard_normal(5 * 128).astype(np.float32)
    y = cuda_emu.empty(x.size, np.float32)
    kernel(BLOCK_REVERSE, "block_reverse")((5,), (128,), (cuda_emu.asarray(x), y))
    np.testing.assert_array_equal(y.get(), x.reshape(5, 128)[:, ::-1].ravel())


def test_shared_scalars_and_shared_atomics():
    x = np.arange(3 * 96, dtype=np.int32) * 7 - 50
    y = cuda_emu.empty(x.size, np.int32)
    kernel(BROADCAST_FIRST, "broadcast_first")((3,), (96,), (cuda_emu.asarray(x), y))
    np.testing.assert_array_equal(y.get(), np.repeat(x[:3], 96))
    sums = cuda_emu.empty(3, np.int32)
    kernel(SHARED_ATOMIC_SUM, "block_sum")((3,), (96,), (cuda_emu.asarray(x), sums))
    np.testing.assert_array_equal(sums.get(), x.reshape(3, 96).sum(axis=1))


def test_a_read_ordered_after_many_readers_may_be_followed_by_a_write():
    x = np.arange(64, dtype=np.int32) + 10
    y = cuda_emu.empty(64, np.int32)
    kernel(REREAD_THEN_WRITE, "reread_then_write")((1,), (64,), (cuda_emu.asarray(x), y))
    np.testing.assert_array_equal(y.get(), np.full(64, 2 * x[0] + 1))


def test_dynamic_shared_memory_beyond_48_kib_needs_the_opt_in():
    n = 200 * 1024 // 8
    x = np.random.default_rng(1).standard_normal(n)
    y = cuda_emu.empty(n, np.float64)
    function = kernel(SHARED_REVERSE, "reverse_in_shared")
    with pytest.raises(ValueError, match="exceed the kernel's limit"):
        function((1,), (256,), (n, cuda_emu.asarray(x), y), shared_mem=8 * n)
    with pytest.raises(ValueError, match="allows 0 to"):
        function.max_dynamic_shared_size_bytes = cuda_emu.MAX_SHARED_OPTIN + 1
    function.max_dynamic_shared_size_bytes = 8 * n
    function((1,), (256,), (n, cuda_emu.asarray(x), y), shared_mem=8 * n)
    np.testing.assert_array_equal(y.get(), x[::-1])


# ---- warp collectives ----------------------------------------------------------------------------
SHUFFLES = r"""
#define FULL_MASK 0xffffffffu
extern "C" __global__ void shuffles(const double* values, const int* source, const int delta, const int lane_mask,
                                    const int width, double* out, int* ints, float* floats)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const double v = values[i];
    out[4 * i] = __shfl_sync(FULL_MASK, v, source[i], width);
    out[4 * i + 1] = __shfl_up_sync(FULL_MASK, v, delta, width);
    out[4 * i + 2] = __shfl_down_sync(FULL_MASK, v, delta, width);
    out[4 * i + 3] = __shfl_xor_sync(FULL_MASK, v, lane_mask, width);
    ints[i] = __shfl_xor_sync(FULL_MASK, -3 * i, lane_mask, width);
    floats[i] = __shfl_down_sync(FULL_MASK, 0.5f * i, delta, width);
}
"""


def shuffle_sources(n: int, source: np.ndarray, delta: int, lane_mask: int, width: int) -> np.ndarray:
    """The lane each thread reads for __shfl, _up, _down and _xor (global ids; CUDA's definitions,
    from PTX's shfl.sync modes): lanes form groups of ``width``; _up and _down keep their own value
    where the source leaves the group; _xor may read from an earlier group, not from a later one."""
    lane = np.arange(n) % 32
    warp_start = np.arange(n) - lane
    group_start = lane & ~(width - 1)
    group_last = group_start + width - 1
    lanes = [group_start + source % width,
             np.where(lane - delta >= group_start, lane - delta, lane),
             np.where(lane + delta <= group_last, lane + delta, lane),
             np.where(lane ^ lane_mask <= group_last, lane ^ lane_mask, lane)]
    return np.stack([warp_start + lane for lane in lanes], axis=1)


@pytest.mark.parametrize("width", [8, 16, 32])
@pytest.mark.parametrize(("delta", "lane_mask"), [(1, 1), (3, 5), (5, 12)])
def test_shuffles_follow_cuda_definitions(width, delta, lane_mask):
    n = 128
    rng = np.random.default_rng(width + 100 * delta)
    values = rng.standard_normal(n)
    source = rng.integers(0, 64, n).astype(np.int32)  # past the width too: taken modulo the width
    out, ints, floats = cuda_emu.empty(4 * n, np.float64), cuda_emu.empty(n, np.int32), cuda_emu.empty(n, np.float32)
    kernel(SHUFFLES, "shuffles")((2,), (64,), (cuda_emu.asarray(values), cuda_emu.asarray(source), delta, lane_mask,
                                               width, out, ints, floats))
    sources = shuffle_sources(n, source, delta, lane_mask, width)
    np.testing.assert_array_equal(out.get().reshape(n, 4), values[sources])
    np.testing.assert_array_equal(ints.get(), -3 * sources[:, 3])
    np.testing.assert_array_equal(floats.get(), 0.5 * sources[:, 2].astype(np.float32))


VOTES = r"""
extern "C" __global__ void votes(const int* predicate, unsigned* ballot, int* any, int* all, unsigned* half,
                                 int* popc, int* ffs)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int p = predicate[i];
    const unsigned b = __ballot_sync(0xffffffffu, p);
    ballot[i] = b;
    any[i] = __any_sync(0xffffffffu, p);
    all[i] = __all_sync(0xffffffffu, p);
    popc[i] = __popc(b);
    ffs[i] = __ffs(b);
    if (threadIdx.x % 32 < 16) {
        half[i] = __ballot_sync(0x0000ffffu, p);
    } else {
        half[i] = __ballot_sync(0xffff0000u, p);
    }
}
"""


def test_votes_ballot_popc_ffs():
    rng = np.random.default_rng(2)
    predicate = np.concatenate([np.zeros(32), np.ones(32), rng.integers(0, 2, 32), np.eye(32)[7] * 5])
    predicate = predicate.astype(np.int32)
    n = predicate.size
    outputs = [cuda_emu.empty(n, dtype) for dtype in (np.uint32, np.int32, np.int32, np.uint32, np.int32, np.int32)]
    kernel(VOTES, "votes")((2,), (64,), (cuda_emu.asarray(predicate), *outputs))
    ballot, any_, all_, half, popc, ffs = (array.get() for array in outputs)
    bits = (predicate != 0).reshape(-1, 32)
    words = (bits * (1 << np.arange(32, dtype=np.uint64))).sum(axis=1).astype(np.uint32)
    np.testing.assert_array_equal(ballot, np.repeat(words, 32))
    np.testing.assert_array_equal(any_, np.repeat(bits.any(axis=1), 32))
    np.testing.assert_array_equal(all_, np.repeat(bits.all(axis=1), 32))
    np.testing.assert_array_equal(popc, np.repeat(bits.sum(axis=1), 32))
    first = np.where(bits.any(axis=1), bits.argmax(axis=1) + 1, 0)  # __ffs: 1-based, 0 for none
    np.testing.assert_array_equal(ffs, np.repeat(first, 32))
    lane = np.arange(n) % 32
    np.testing.assert_array_equal(half, np.where(lane < 16, ballot & 0x0000FFFF, ballot & 0xFFFF0000))


WARP_ROTATE = r"""
extern "C" __global__ void warp_rotate(const int* x, int* y)
{
    __shared__ int s[128];
    const int t = threadIdx.x, lane = t % 32;
    s[t] = x[blockIdx.x * blockDim.x + t];
    __syncwarp();
    y[blockIdx.x * blockDim.x + t] = s[t - lane + (lane + 1) % 32];
}
"""

# Lane 20 writes; lanes 0-15 meet at a __syncwarp that lane 20 joins only if JOINED says so.
HALF_WARP_SYNC = r"""
extern "C" __global__ void half_warp_sync(int* y)
{
    __shared__ int s[32];
    const int lane = threadIdx.x;
    if (lane < 16 || lane == 20) {
        if (lane == 20) {
            s[0] = 7;
        }
        if (lane < 16 || JOINED) {
            __syncwarp(JOINED ? 0x0010ffffu : 0x0000ffffu);
        }
        if (lane == 5) {
            y[0] = s[0];
        }
    }
}
"""


def test_syncwarp_orders_shared_memory_within_a_warp():
    x = np.arange(256, dtype=np.int32) * 3
    y = cuda_emu.empty(256, np.int32)
    kernel(WARP_ROTATE, "warp_rotate")((2,), (128,), (cuda_emu.asarray(x), y))
    np.testing.assert_array_equal(y.get(), np.roll(x.reshape(-1, 32), -1, axis=1).ravel())
    y = cuda_emu.empty(1, np.int32)
    kernel("#define JOINED 1\n" + HALF_WARP_SYNC, "half_warp_sync")((1,), (32,), (y,))
    assert y.get()[0] == 7


ATOMICS = r"""
extern "C" __global__ void atomics(const int* values, int* count, int* tickets, unsigned long long* big, float* fsum,
                                   double* dsum, int* maximum, unsigned* minimum, long long* difference,
                                   int* cas_count)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    tickets[i] = atomicAdd(count, 1);
    atomicAdd(big, 1ull << 33);
    atomicAdd(fsum, 1.0f);
    atomicAdd(dsum, 0.25);
    atomicMax(maximum, values[i]);
    atomicMin(minimum, (unsigned)values[i] + 5u);
    atomicSub(difference, (long long)i);
    // an increment by compare-and-swap, retried until no other thread came between
    int old = *cas_count, assumed;
    do {
        assumed = old;
        old = atomicCAS(cas_count, assumed, assumed + 1);
    } while (old != assumed);
}
"""


def test_atomics_are_exact_across_concurrent_blocks(monkeypatch):
    monkeypatch.setenv("REPRO_CUDA_EMU_WORKERS", "4")  # blocks on four OS threads at once
    blocks, threads = 48, 64
    n = blocks * threads
    values = np.random.default_rng(3).integers(0, 10**6, n).astype(np.int32)
    count, cas_count = cuda_emu.zeros(1, np.int32), cuda_emu.zeros(1, np.int32)
    tickets = cuda_emu.empty(n, np.int32)
    big, fsum, dsum = cuda_emu.zeros(1, np.uint64), cuda_emu.zeros(1, np.float32), cuda_emu.zeros(1, np.float64)
    maximum = cuda_emu.asarray(np.array([-1], np.int32))
    minimum = cuda_emu.asarray(np.array([2**32 - 1], np.uint32))
    difference = cuda_emu.asarray(np.array([10**12], np.int64))
    kernel(ATOMICS, "atomics")((blocks,), (threads,), (cuda_emu.asarray(values), count, tickets, big, fsum, dsum,
                                                       maximum, minimum, difference, cas_count))
    assert count.get()[0] == n
    np.testing.assert_array_equal(np.sort(tickets.get()), np.arange(n))  # every old value returned once
    assert big.get()[0] == n << 33
    assert fsum.get()[0] == n and dsum.get()[0] == n / 4
    assert maximum.get()[0] == values.max()
    assert minimum.get()[0] == values.min() + 5
    assert difference.get()[0] == 10**12 - n * (n - 1) // 2
    assert cas_count.get()[0] == n


SCALARS = r"""
extern "C" __global__ void scalars(const long long a, const unsigned long long b, const double d, const float f,
                                   const int i, const short s, const double* x, long long* ints, double* reals)
{
    const int t = threadIdx.x;
    reals[3 + t] = 2 * __ldg(x + t);
    if (t == 0) {
        ints[0] = a;
        ints[1] = (long long)b;
        ints[2] = i;
        ints[3] = s;
        reals[0] = d;
        reals[1] = f;
        reals[2] = (double)a * 2;
    }
}
"""


def test_scalar_arguments_and_ldg():
    x = np.random.default_rng(4).standard_normal(64)
    ints, reals = cuda_emu.empty(4, np.int64), cuda_emu.empty(3 + 64, np.float64)
    a, b = -(2**40) - 5, 2**63 + 7
    kernel(SCALARS, "scalars")((1,), (64,), (np.int64(a), b, 1 / 3, np.float32(0.1), -7, np.int16(-3),
                                             cuda_emu.asarray(x), ints, reals))
    got_ints, got_reals = ints.get(), reals.get()
    assert got_ints[0] == a and got_ints[1].astype(np.uint64) == b
    assert list(got_ints[2:]) == [-7, -3]
    assert got_reals[0] == 1 / 3 and got_reals[1] == float(np.float32(0.1)) and got_reals[2] == 2.0 * a
    np.testing.assert_array_equal(got_reals[3:], 2 * x)
    # a Python float for a float parameter is rounded to float
    kernel(SCALARS, "scalars")((1,), (64,), (a, b, 1 / 3, 0.1, -7, -3, cuda_emu.asarray(x), ints, reals))
    assert reals.get()[1] == float(np.float32(0.1))


def test_arguments_are_checked_against_the_kernels_parameters():
    function = kernel(SCALARS, "scalars")
    x, ints, reals = cuda_emu.zeros(64, np.float64), cuda_emu.zeros(4, np.int64), cuda_emu.zeros(67, np.float64)
    good = (1, 2, 0.5, 0.5, 3, 4, x, ints, reals)

    def call(**changes):
        names = ("a", "b", "d", "f", "i", "s", "x", "ints", "reals")
        args = tuple(changes.get(name, value) for name, value in zip(names, good))
        function((1,), (64,), args)

    with pytest.raises(TypeError, match=r"scalars takes 9 arguments \(a, b, d, f, i, s, x, ints, reals\), got 8"):
        function((1,), (64,), good[:-1])
    with pytest.raises(TypeError, match="argument x must be an array on the emulated device"):
        call(x=np.zeros(64))
    with pytest.raises(TypeError, match="float32 .*4-byte elements.* 8-byte elements"):
        call(x=cuda_emu.zeros(64, np.float32))
    with pytest.raises(TypeError, match="argument i: a int64 scalar for a 4-byte parameter"):
        call(i=np.int64(3))
    with pytest.raises(TypeError, match="argument f: a float64 scalar for a 4-byte parameter"):
        call(f=np.float64(0.5))
    with pytest.raises(TypeError, match="argument i: 2.5 for an integer parameter"):
        call(i=2.5)
    with pytest.raises(OverflowError, match="argument s = 70000 does not fit 2 bytes"):
        call(s=70000)
    with pytest.raises(ValueError, match="a block of 1025 threads"):
        function((1,), (1025,), good)
    function((1,), (64,), good)  # the baseline is fine


# ---- out-of-bounds accesses -----------------------------------------------------------------------
OUT_OF_BOUNDS = r"""
extern "C" __global__ void read_past_end(const int n, const double* x, double* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + 1];
}

extern "C" __global__ void read_before_start(const int n, const double* x, double* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i - 1];
}

extern "C" __global__ void write_past_end(const int n, const double* x, double* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i + 1] = x[i];
}

extern "C" __global__ void atomic_past_end(const int n, const double* x, double* y)
{
    if (threadIdx.x == 0) atomicAdd(y + n, x[0]);
}

extern "C" __global__ void wild_read(const int n, const double* x, double* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + (1 << 26)];
}

extern "C" __global__ void shared_past_launch(const int n, const double* x, double* y)
{
    extern __shared__ double staged[];
    staged[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = staged[blockDim.x - 1 - threadIdx.x];
}
"""


@pytest.mark.parametrize(("name", "expected", "line"), [
    ("read_past_end", r"out-of-bounds read of 8 bytes at x\[100\] \(x has 100 elements of 8 bytes\) by thread "
                      r"\(3,0,0\) of block \(3,0,0\)", "x[i + 1]"),
    ("read_before_start", r"out-of-bounds read of 8 bytes at x\[-1\] \(x has 100 elements", "x[i - 1]"),
    ("write_past_end", r"out-of-bounds write of 8 bytes at y\[100\] \(y has 100 elements", "y[i + 1]"),
    ("atomic_past_end", r"out-of-bounds atomic of 8 bytes at y\[100\]", "atomicAdd(y + n"),
    ("wild_read", r"read of 8 bytes at address 0x[0-9a-f]+, outside every argument array and shared memory",
     "x[i + (1 << 26)]"),
])
def test_out_of_bounds_global_accesses(name, expected, line):
    n = 100
    function = kernel(OUT_OF_BOUNDS, name, "oob.cu")
    message = kernel_error(function, (4,), (32,), (n, cuda_emu.zeros(n, np.float64), cuda_emu.zeros(n, np.float64)))
    assert re.search(expected, message), message
    assert f"[at oob.cu:{line_of(OUT_OF_BOUNDS, line)}]" in message


def test_dynamic_shared_memory_is_bounded_by_the_launch_size():
    function = kernel(OUT_OF_BOUNDS, "shared_past_launch", "oob.cu")
    x, y = cuda_emu.zeros(64, np.float64), cuda_emu.zeros(64, np.float64)
    function((1,), (64,), (64, x, y), shared_mem=64 * 8)  # the full size is fine
    message = kernel_error(function, (1,), (64,), (64, x, y), shared_mem=63 * 8)
    assert ("out-of-bounds write of 8 bytes at byte 504 of dynamic shared memory, which the launch sized to 504 "
            "bytes, by thread (63,0,0)") in message
    assert f"[at oob.cu:{line_of(OUT_OF_BOUNDS, 'staged[threadIdx.x] = x')}]" in message


TILE_TOO_SMALL = r"""
extern "C" __global__ void tile_too_small(const float* x, float* y)
{
    __shared__ float tile[32];
    tile[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = tile[threadIdx.x % 32];
}
"""


def test_a_write_past_the_static_shared_variables_is_reported():
    """Past the last __shared__ variable; an overrun into another one goes unseen, as on a GPU,
    whose memcheck sees one window of shared memory per block."""
    x, y = cuda_emu.zeros(64, np.float32), cuda_emu.zeros(64, np.float32)
    kernel(TILE_TOO_SMALL, "tile_too_small")((1,), (32,), (x, y))
    message = kernel_error(kernel(TILE_TOO_SMALL, "tile_too_small"), (1,), (64,), (x, y))
    # where the linker puts the dynamic shared buffer: before the static variables (GCC 12), or after
    assert re.search(r"out-of-bounds write of 4 bytes at (__shared__ tile_too_small::tile at byte 128 \(it has 128 "
                     r"bytes\), past the last __shared__ variable|byte 0 of dynamic shared memory, which the launch "
                     r"sized to 0 bytes), by thread \(32,0,0\) of block \(0,0,0\)", message), message
    assert f"[at test.cu:{line_of(TILE_TOO_SMALL, 'tile[threadIdx.x] = x')}]" in message


# ---- collectives and barriers that not every thread reaches -----------------------------------------
COLLECTIVES = r"""
extern "C" __global__ void divergent_shuffle(const int* x, int* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = x[i];
    if (threadIdx.x % 32 < 16) v = __shfl_down_sync(0xffffffffu, v, 1);
    y[i] = v;
}

extern "C" __global__ void full_mask_shuffle(const int* x, int* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = __shfl_sync(0xffffffffu, x[i], 0);
}

extern "C" __global__ void mask_without_caller(const int* x, int* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = __shfl_sync(0xfffffffeu, x[i], 1);
}

extern "C" __global__ void source_outside_mask(const int* x, int* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x < 16) y[i] = __shfl_sync(0x0000ffffu, x[i], 20);
}

extern "C" __global__ void barrier_after_return(const int* x, int* y)
{
    __shared__ int s[64];
    const int t = threadIdx.x;
    if (t >= 40) return;
    s[t] = x[t];
    __syncthreads();  // after the return
    y[t] = s[39 - t];
}

extern "C" __global__ void two_barriers(const int* x, int* y)
{
    if (threadIdx.x < 32) {
        __syncthreads();  // first
        y[threadIdx.x] = 1;
    } else {
        __syncthreads();  // second
        y[threadIdx.x] = 2;
    }
}
"""


def _collective_error(name: str, block: int = 64) -> str:
    function = kernel(COLLECTIVES, name, "collectives.cu")
    return kernel_error(function, (2,), (block,), (cuda_emu.zeros(2 * block, np.int32),
                                                   cuda_emu.zeros(2 * block, np.int32)))


def test_a_shuffle_in_a_divergent_branch_is_reported():
    line = line_of(COLLECTIVES, "__shfl_down_sync(0xffffffffu, v, 1)")
    for _ in range(3):  # whether the other lanes exit before or after: the same report
        message = _collective_error("divergent_shuffle")
        assert re.search(rf"__shfl_down_sync \(collectives.cu:{line}\) waits for lane (1[6-9]|2\d|3[01]) of warp \d "
                         r"in block \(\d,0,0\), which has exited: not every lane of the mask 0xffffffff reaches it",
                         message), message


def test_shuffle_masks_are_checked():
    message = _collective_error("full_mask_shuffle", block=48)
    assert "its mask 0xffffffff names lanes 16-31, which do not exist (warp 1 has 16 threads" in message
    message = _collective_error("mask_without_caller")
    assert "its mask 0xfffffffe does not include the calling lane 0" in message
    message = _collective_error("source_outside_mask")
    assert "reads lane 20, which is not in its mask (lanes 0-15)" in message


def test_syncthreads_after_an_early_return_is_reported():
    line = line_of(COLLECTIVES, "// after the return")
    for _ in range(3):
        message = _collective_error("barrier_after_return")
        assert re.search(rf"__syncthreads \(collectives.cu:{line}\) in block \(\d,0,0\) waits for thread \d+, which "
                         r"has exited: every thread of the block must reach it", message), message


def test_threads_at_two_different_barriers_are_a_deadlock():
    message = _collective_error("two_barriers")
    first, second = line_of(COLLECTIVES, "// first"), line_of(COLLECTIVES, "// second")
    assert "can make no progress" in message
    assert f"32 thread(s) wait at __syncthreads (collectives.cu:{first})" in message
    assert f"32 thread(s) wait at __syncthreads (collectives.cu:{second})" in message


# ---- races ----------------------------------------------------------------------------------------
def test_a_missing_syncthreads_between_warps_is_a_shared_race_every_time():
    broken = kernel(without(BLOCK_REVERSE, "__syncthreads();"), "block_reverse")
    x, y = cuda_emu.zeros(2 * 128, np.float32), cuda_emu.zeros(2 * 128, np.float32)
    lines = {line_of(BLOCK_REVERSE, "tile[t] = x"), line_of(BLOCK_REVERSE, "= tile[BLOCK - 1 - t]")}
    for _ in range(6):  # a new schedule (seed) each launch: reported whichever warp runs first
        message = kernel_error(broken, (2,), (128,), (x, y))
        found = re.search(ANY_RACE + r" on __shared__ block_reverse::tile at byte (\d+): "
                          r"thread \d+ \(warp \d, lane \d+\) and thread \(\d+,0,0\) of block \(\d,0,0\) access it with "
                          r"no __syncthreads", message)
        assert found and int(found[2]) < 4 * 128 and int(found[2]) % 4 == 0, message
        found = re.search(r"\[at test.cu:(\d+) and test.cu:(\d+)\]", message)
        assert found and {int(found[1]), int(found[2])} == lines, message


def test_a_missing_syncthreads_after_a_shared_scalar_write_is_a_race():
    broken = kernel(without(BROADCAST_FIRST, "__syncthreads();"), "broadcast_first")
    for _ in range(4):
        message = kernel_error(broken, (2,), (64,), (cuda_emu.zeros(2, np.int32), cuda_emu.zeros(128, np.int32)))
        assert re.search(ANY_RACE + r" on __shared__ broadcast_first::first at byte 0: ", message), message


def test_a_missing_syncwarp_is_a_race_within_a_warp():
    broken = kernel(without(WARP_ROTATE, "__syncwarp();"), "warp_rotate")
    message = kernel_error(broken, (1,), (128,), (cuda_emu.zeros(128, np.int32), cuda_emu.zeros(128, np.int32)))
    found = re.search(ANY_RACE + r" on __shared__ warp_rotate::s at byte \d+: thread (\d+) \(warp \d, lane "
                      r"\d+\) and thread \((\d+),0,0\)", message)
    assert found and int(found[2]) // 32 == int(found[3]) // 32, message  # two lanes of one warp


def test_a_syncwarp_that_the_writer_did_not_join_orders_nothing():
    message = kernel_error(kernel("#define JOINED 0\n" + HALF_WARP_SYNC, "half_warp_sync"), (1,), (32,),
                           (cuda_emu.zeros(1, np.int32),))
    assert re.search(ANY_RACE + r" on __shared__ half_warp_sync::s at byte 0: ", message), message
    assert "thread 20 (warp 0, lane 20)" in message or "thread (20,0,0)" in message


GLOBAL_RACES = r"""
extern "C" __global__ void same_element(int* y)
{
    y[0] = threadIdx.x;
}

extern "C" __global__ void publish(int* flags, int* out)
{
    if (threadIdx.x == 0) flags[blockIdx.x] = 42 + blockIdx.x;
    BARRIER;
    out[blockIdx.x * blockDim.x + threadIdx.x] = flags[blockIdx.x];
}

extern "C" __global__ void warp_exchange(int* y, int* z)
{
    const int lane = threadIdx.x % 32;
    y[threadIdx.x] = lane;
    BARRIER;
    z[threadIdx.x] = y[threadIdx.x - lane + (lane + 1) % 32];
}

extern "C" __global__ void read_other_block(int* flags, int* out)
{
    if (threadIdx.x == 0) flags[blockIdx.x] = 1;
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = flags[0];
}

extern "C" __global__ void read_then_write_other_block(int* y, int* out)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = y[3];  // read
    if (blockIdx.x == 1 && threadIdx.x == 0) y[3] = 7;  // write
}

extern "C" __global__ void read_then_write_other_warp(int* y, int* out)
{
    out[threadIdx.x] = y[threadIdx.x];  // read
    BARRIER;
    y[(threadIdx.x + 32) % blockDim.x] = threadIdx.x;  // write
}

extern "C" __global__ void read_all_then_write(int* y, int* out)
{
    out[blockIdx.x * blockDim.x + threadIdx.x] = y[blockIdx.x];  // every thread of the block reads
    BARRIER;
    if (threadIdx.x == 0) y[blockIdx.x] = 5;
}

extern "C" __global__ void read_then_write_own(int* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = y[i] + 1;
    y[i] += y[i];
}
"""


def test_global_races():
    """Global memory keeps the last writer of each element and its readers since: a write, then a read
    or write by another thread, with no barrier between, is reported whatever the schedule."""
    ordered = kernel("#define BARRIER __syncthreads()\n" + GLOBAL_RACES, "publish")
    flags, out = cuda_emu.zeros(3, np.int32), cuda_emu.zeros(3 * 64, np.int32)
    ordered((3,), (64,), (flags, out))
    np.testing.assert_array_equal(out.get(), np.repeat([42, 43, 44], 64))

    for _ in range(3):
        message = kernel_error(kernel("#define BARRIER\n" + GLOBAL_RACES, "same_element"), (2,), (64,),
                               (cuda_emu.zeros(1, np.int32),))
        assert re.search(r"write-after-write race on y\[0\]: thread \d+ of block \d wrote it in this launch, and "
                         r"thread \(\d+,0,0\) of block \(\d,0,0\) writes it with no __syncthreads \(or __syncwarp "
                         r"within a warp\) between", message), message


def test_syncwarp_orders_global_memory_within_a_warp():
    y, z = cuda_emu.zeros(64, np.int32), cuda_emu.zeros(64, np.int32)
    kernel("#define BARRIER __syncwarp()\n" + GLOBAL_RACES, "warp_exchange")((1,), (64,), (y, z))
    np.testing.assert_array_equal(z.get(), np.tile(np.roll(np.arange(32), -1), 2))
    # without it: the lanes of a warp run in lockstep, so every write precedes every read
    for _ in range(3):
        message = kernel_error(kernel("#define BARRIER\n" + GLOBAL_RACES, "warp_exchange"), (1,), (64,), (y, z))
        assert re.search(r"read-after-write race on y\[\d+\]: thread \d+ of block 0 wrote it in this launch, and "
                         r"thread \(\d+,0,0\) of block \(0,0,0\) reads it", message), message


@pytest.mark.parametrize("workers", ["1", "4"])
def test_a_global_write_read_by_another_block_is_a_race(monkeypatch, workers):
    monkeypatch.setenv("REPRO_CUDA_EMU_WORKERS", workers)  # 1: block 0 runs first; 4: either may
    function = kernel("#define BARRIER\n" + GLOBAL_RACES, "read_other_block")
    for _ in range(5):
        message = kernel_error(function, (2,), (32,), (cuda_emu.zeros(2, np.int32), cuda_emu.zeros(2, np.int32)))
        # block 1 reads flags[0] after block 0 wrote it, or block 0 writes it after block 1 read it
        assert ("read-after-write race on flags[0]: thread 0 of block 0 wrote it in this launch, and thread (0,0,0) "
                "of block (1,0,0) reads it") in message or \
            ("write-after-read race on flags[0]: thread 0 of block 1 read it in this launch, and thread (0,0,0) of "
             "block (0,0,0) writes it") in message, message
        assert "threads of different blocks can only meet through atomics" in message


@pytest.mark.parametrize("workers", ["1", "4"])
def test_a_global_read_then_write_by_another_block_is_a_race_every_time(monkeypatch, workers):
    monkeypatch.setenv("REPRO_CUDA_EMU_WORKERS", workers)
    function = kernel("#define BARRIER\n" + GLOBAL_RACES, "read_then_write_other_block")
    for _ in range(10):  # with one worker block 0 always reads first; with four, either block may run first
        message = kernel_error(function, (2,), (32,), (cuda_emu.zeros(8, np.int32), cuda_emu.zeros(1, np.int32)))
        assert ("write-after-read race on y[3]: thread 0 of block 0 read it in this launch, and thread (0,0,0) of "
                "block (1,0,0) writes it with no __syncthreads (or __syncwarp within a warp) between (threads of "
                "different blocks can only meet through atomics)") in message or \
            ("read-after-write race on y[3]: thread 0 of block 1 wrote it in this launch, and thread (0,0,0) of "
             "block (0,0,0) reads it") in message, message
        assert workers != "1" or "write-after-read" in message, message


def test_a_global_read_then_write_by_another_warp_needs_a_syncthreads():
    y, out = cuda_emu.zeros(64, np.int32), cuda_emu.zeros(64, np.int32)
    for _ in range(6):  # whichever warp runs first, the read is recorded
        message = kernel_error(kernel("#define BARRIER\n" + GLOBAL_RACES, "read_then_write_other_warp"), (1,), (64,),
                               (y, out))
        found = re.search(r"(write-after-read|read-after-write) race on y\[(\d+)\]: thread (\d+) of block 0 "
                          r"(read|wrote) it in this launch, and thread \((\d+),0,0\) of block \(0,0,0\) (writes|reads) "
                          r"it with no __syncthreads \(or __syncwarp within a warp\) between \[", message)
        assert found and int(found[3]) // 32 != int(found[5]) // 32, message  # two warps
    y = cuda_emu.asarray(np.arange(64, dtype=np.int32))
    kernel("#define BARRIER __syncthreads()\n" + GLOBAL_RACES, "read_then_write_other_warp")((1,), (64,), (y, out))
    np.testing.assert_array_equal(out.get(), np.arange(64))
    np.testing.assert_array_equal(y.get(), np.roll(np.arange(64), 32))


@pytest.mark.parametrize(("barrier", "threads", "race"), [("", 32, True), ("__syncwarp()", 32, False),
                                                          ("__syncwarp()", 64, True), ("__syncthreads()", 128, False)])
def test_a_write_after_several_readers_is_ordered_only_after_them_all(barrier, threads, race):
    function = kernel(f"#define BARRIER {barrier}\n" + GLOBAL_RACES, "read_all_then_write")
    args = (cuda_emu.zeros(3, np.int32), cuda_emu.zeros(3 * threads, np.int32))
    if race:
        message = kernel_error(function, (3,), (threads,), args)
        assert re.search(ANY_RACE + r" on y\[\d\]: ", message), message
        if threads == 32:  # one warp in lockstep: every lane reads before lane 0 writes
            assert re.search(r"write-after-read race on y\[\d\]: several threads of block \d read it in this launch, "
                             r"and thread \(0,0,0\) of block \(\d,0,0\) writes it", message), message
    else:
        function((3,), (threads,), args)
        np.testing.assert_array_equal(args[0].get(), 5)


@pytest.mark.parametrize("workers", ["1", "4"])
def test_a_thread_reading_then_writing_its_own_element_is_no_race(monkeypatch, workers):
    monkeypatch.setenv("REPRO_CUDA_EMU_WORKERS", workers)
    y = cuda_emu.asarray(np.arange(4 * 64, dtype=np.int32))
    kernel("#define BARRIER\n" + GLOBAL_RACES, "read_then_write_own")((4,), (64,), (y,))
    np.testing.assert_array_equal(y.get(), 2 * (np.arange(4 * 64) + 1))


# ---- uninitialised data ----------------------------------------------------------------------------
UNINITIALISED_COUNTER = r"""
extern "C" __global__ void row_counts(const int n, const int* x, int* y)
{
    int count;
    for (int k = 0; k < n; ++k) {
        count += x[k];
    }
    y[threadIdx.x] = count;
}
"""

STALE = r"""
extern "C" __global__ void add_one(const double* x, double* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[i] + 1;
}

extern "C" __global__ void stale_shared(double* y, double* z)
{
    __shared__ double s[32];
    extern __shared__ double dynamic[];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = s[threadIdx.x];
    z[i] = dynamic[threadIdx.x];
    s[threadIdx.x] = 1.0;
    dynamic[threadIdx.x] = 2.0;
}
"""


def test_an_uninitialised_local_is_refused_by_the_compiler():
    # -Werror=uninitialized / maybe-uninitialized: the build refuses what the compiler can see
    with pytest.raises(cuda_emu.BuildError, match=r"(?s)could not build uninitialised.cu.*.count. (may be|is) used "
                                          r"uninitialized"):
        cuda_emu.RawModule(UNINITIALISED_COUNTER, "uninitialised.cu")


def test_uninitialised_device_and_shared_memory_reads_as_nan(monkeypatch):
    assert np.isnan(cuda_emu.empty(5, np.float64).get()).all()
    np.testing.assert_array_equal(cuda_emu.empty(5, np.int32).get(), -1)
    y = cuda_emu.zeros(64, np.float64)
    kernel(STALE, "add_one")((2,), (32,), (cuda_emu.empty(64, np.float64), y))
    assert np.isnan(y.get()).all()
    # every block starts with 0xff shared memory, even after an earlier block on the same OS thread wrote it
    monkeypatch.setenv("REPRO_CUDA_EMU_WORKERS", "1")
    y, z = cuda_emu.zeros(4 * 32, np.float64), cuda_emu.zeros(4 * 32, np.float64)
    kernel(STALE, "stale_shared")((4,), (32,), (y, z), shared_mem=32 * 8)
    assert np.isnan(y.get()).all() and np.isnan(z.get()).all()


SPIN = r"""
extern "C" __global__ void spin(const int* flag, int* y)
{
    while (*(volatile const int*)flag == 0) {
    }
    y[threadIdx.x] = 1;
}
"""


def test_a_kernel_that_never_ends_is_stopped_by_the_time_limit(monkeypatch):
    monkeypatch.setenv("REPRO_CUDA_EMU_TIMEOUT", "2")
    start = time.monotonic()
    message = kernel_error(kernel(SPIN, "spin"), (2,), (64,), (cuda_emu.zeros(1, np.int32),
                                                              cuda_emu.zeros(64, np.int32)))
    assert "the launch ran past the emulator's time limit of 2 s" in message
    assert time.monotonic() - start < 30


# ---- deliberately broken copies of the production kernels ----------------------------------------
@pytest.fixture
def broken_kernel(monkeypatch):
    """``broken_kernel(file, edit)``: the SpMV executors compile ``edit(source)`` for kernels/<file>.cu."""
    original = cuda_kernels.kernel_source

    def install(file: str, edit) -> None:
        monkeypatch.setattr(cuda_backends, "kernel_source",
                            lambda name, defines: edit(original(name, defines)) if name == file else original(name,
                                                                                                              defines))
        cuda_backends._emulated_module.cache_clear()

    yield install
    cuda_backends._emulated_module.cache_clear()


def kernel_line(file: str, text: str) -> int:
    return line_of((cuda_kernels.KERNEL_DIR / f"{file}.cu").read_text(), text)


@pytest.fixture(scope="module")
def spmv_case():
    """A matrix with several 64-column blocks, x and the expected y."""
    rng = np.random.default_rng(11)
    matrix = sp.random(300, 500, density=0.03, format="csr", random_state=rng)
    x = rng.standard_normal(500)
    return matrix, x, matrix @ x


def hbp(matrix):
    return cuda.HBPCuda(build_hbp(matrix, "hash", block_height=64, block_width=64), warps=4, threads_per_block=32,
                        device="cuda-emu")


def regu2d(matrix):
    return cuda.Regu2DCuda(build_regu2d(matrix, block_height=64, block_width=64, slice_height=32), device="cuda-emu")


def test_the_unbroken_kernels_are_right_on_the_same_cases(spmv_case):
    matrix, x, expected = spmv_case
    for executor in (hbp(matrix), regu2d(matrix), cuda.CsrVectorCuda(matrix, device="cuda-emu")):
        np.testing.assert_allclose(executor(cuda_emu.asarray(x)).get(), expected, rtol=1e-12, atol=1e-12)


def test_csr_vector_with_its_shuffle_in_a_divergent_branch(broken_kernel, spmv_case):
    matrix, x, _ = spmv_case
    broken_kernel("csr", replace("sum += __shfl_down_sync(FULL_MASK, sum, offset);",
                                 "if (lane < 16) sum += __shfl_down_sync(FULL_MASK, sum, offset);"))
    with pytest.raises(cuda_emu.KernelError) as error:
        cuda.CsrVectorCuda(matrix, device="cuda-emu")(cuda_emu.asarray(x))
    line = kernel_line("csr", "sum += __shfl_down_sync(FULL_MASK, sum, offset);")
    assert re.match(rf"csr_vector: __shfl_down_sync \(csr.cu:{line}\) waits for lane (1[6-9]|2\d|3[01]) of warp \d+ "
                    r"in block \(\d+,0,0\), which has exited", str(error.value)), error.value


@pytest.mark.parametrize(("occurrence", "accesses"), [
    # zeroing the y panel, then another lane adding into it
    (0, ("panel[r] = 0;", "panel[slot_row[first_slot + lane]] += sum;")),
    # one group's additions, then another lane's of the next group to the same row
    (1, ("panel[slot_row[first_slot + lane]] += sum;",)),
])
def test_hbp_without_each_syncwarp(broken_kernel, spmv_case, occurrence, accesses):
    """The first __syncwarp orders the panel's zeroing before any lane adds to it; the second orders
    one group's additions before the next group's, whose lane for the same row may differ."""
    matrix, x, _ = spmv_case
    broken_kernel("hbp", replace("__syncwarp();", "", occurrence))
    lines = {kernel_line("hbp", access) for access in accesses}
    with pytest.raises(cuda_emu.KernelError) as error:
        hbp(matrix)(cuda_emu.asarray(x))
    message = str(error.value)
    assert re.match("hbp_spmv: " + ANY_RACE + " on dynamic shared memory at byte ", message), message
    found = re.search(r"\[at hbp.cu:(\d+) and hbp.cu:(\d+)\]", message)
    assert found and {int(found[1]), int(found[2])} == lines, message


@pytest.mark.parametrize(("edit", "access", "message"), [
    (replace("__ldg(xs + cols[k + lane])", "__ldg(xs + cols[k + lane] + 1)"), "__ldg(xs + cols[k + lane]",
     r"out-of-bounds read of 8 bytes at x\[500\] \(x has 500 elements of 8 bytes\)"),
    (replace("y[row0 + r] = panel[r];", "y[row0 + r + 1] = panel[r];"), "y[row0 + r] = panel[r];",
     r"out-of-bounds write of 8 bytes at y\[300\] \(y has 300 elements"),
], ids=["x-past-its-end", "y-past-its-end"])
def test_hbp_off_by_one(broken_kernel, spmv_case, edit, access, message):
    """A column read one past its own, or a row block's rows written one past the last, is caught at its line
    (``access``: the line's text before the edit)."""
    matrix, x, _ = spmv_case
    broken_kernel("hbp", edit)
    with pytest.raises(cuda_emu.KernelError) as error:
        hbp(matrix)(cuda_emu.asarray(x))
    assert re.match("hbp_spmv: " + message, str(error.value)), error.value
    assert f"[at hbp.cu:{kernel_line('hbp', access)}]" in str(error.value)  # the edit keeps the line numbers


@pytest.mark.parametrize("grid", [None, 1], ids=["one-block-per-panel", "grid-stride"])
@pytest.mark.parametrize(("occurrence", "accesses"), [
    # zeroing y_panel, then other threads add into it
    (0, ("y_panel[i] = 0;", "y_panel[slot_row[first_slot + lane]] += sum;")),
    # the additions of one stored block, then another thread's of the next block
    (1, ("y_panel[slot_row[first_slot + lane]] += sum;",)),
    # redundant: each thread zeroes for the next panel exactly the entries it wrote out itself
    (2, ()),
])
def test_regu2d_without_each_syncthreads(broken_kernel, spmv_case, occurrence, accesses, grid):
    matrix, x, expected = spmv_case
    broken_kernel("regu2d", replace("__syncthreads();", "", occurrence))
    executor = regu2d(matrix)
    if grid is not None:
        executor.blocks = grid  # one thread block strides over every panel
    if not accesses:
        np.testing.assert_allclose(executor(cuda_emu.asarray(x)).get(), expected, rtol=1e-12, atol=1e-12)
        return
    with pytest.raises(cuda_emu.KernelError) as error:
        executor(cuda_emu.asarray(x))
    message = str(error.value)
    assert re.match("regu2d_spmv: " + ANY_RACE + " on dynamic shared memory at byte ", message), message
    found = re.search(r"\[at regu2d.cu:(\d+) and regu2d.cu:(\d+)\]", message)
    assert found and {int(found[1]), int(found[2])} == {kernel_line("regu2d", text) for text in accesses}, message


# ---- memory traffic ----------------------------------------------------------------------------------
TRAFFIC = r"""
extern "C" __global__ void copy(const double* x, double* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[i];
}

extern "C" __global__ void gather_strided(const int stride, const double* x, double* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[(long long)i * stride];
}

extern "C" __global__ void broadcast(const double* x, double* y)
{
    y[blockIdx.x * blockDim.x + threadIdx.x] = x[0];
}

extern "C" __global__ void two_loads(const double* x, double* y)
{
    y[blockIdx.x * blockDim.x + threadIdx.x] = x[0] + x[1];
}

extern "C" __global__ void misaligned(const int offset, const char* bytes, double* y)
{
    y[threadIdx.x] = *reinterpret_cast<const double*>(bytes + offset + 8 * threadIdx.x);
}

extern "C" __global__ void count_all(int* counter)
{
    atomicAdd(counter, 1);
}
"""


def traffic(name: str, grid, block, args) -> cuda_emu.LaunchReport:
    with cuda_emu.recorded() as reports:
        report = kernel(TRAFFIC, name, "traffic.cu")(grid, block, args)
    assert reports == [report]
    return report


def test_coalesced_copy_moves_one_sector_per_four_doubles():
    x, y = cuda_emu.asarray(np.arange(1024.0)), cuda_emu.zeros(1024, np.float64)
    report = traffic("copy", (8,), (128,), (x, y))
    np.testing.assert_array_equal(y.get(), np.arange(1024.0))
    assert report.arrays["x"].requests == {"load": 32, "store": 0, "atomic": 0}  # one per warp
    assert report.arrays["x"].sectors == {"load": 256, "store": 0, "atomic": 0}
    assert report.arrays["y"].requests["store"] == 32 and report.arrays["y"].sectors["store"] == 256
    assert report.arrays["x"].block_sectors == report.arrays["y"].block_sectors == 256
    assert report.sector_bytes() == report.sector_bytes(reused=("x",)) == 32 * 512
    assert (report.kernel, report.grid, report.block, report.shared_bytes) == ("copy", (8, 1, 1), (128, 1, 1), 0)
    assert report.warp_instructions >= 2 * 32  # a load and a store per warp, at least


def test_strided_gather_moves_one_sector_per_lane():
    x, y = cuda_emu.zeros(4 * 256, np.float64), cuda_emu.zeros(256, np.float64)
    report = traffic("gather_strided", (2,), (128,), (4, x, y))
    assert report.arrays["x"].requests["load"] == 8 and report.arrays["x"].sectors["load"] == 256
    assert report.arrays["y"].sectors["store"] == 64


def test_broadcast_and_reuse_within_a_block():
    x, y = cuda_emu.zeros(4, np.float64), cuda_emu.zeros(4 * 128, np.float64)
    report = traffic("broadcast", (4,), (128,), (x, y))
    assert report.arrays["x"].requests["load"] == 16 and report.arrays["x"].sectors["load"] == 16
    assert report.arrays["x"].block_sectors == 4  # one sector per thread block
    assert report.sector_bytes() == 32 * (16 + 128) and report.sector_bytes(reused=("x",)) == 32 * (4 + 128)

    report = traffic("two_loads", (1,), (64,), (x, y))
    assert report.arrays["x"].requests["load"] == 4 and report.arrays["x"].sectors["load"] == 4
    assert report.arrays["x"].block_sectors == 1  # x[0] and x[1]: one sector, twice per warp


def test_misaligned_accesses_span_two_sectors():
    data, y = cuda_emu.zeros(512, np.uint8), cuda_emu.zeros(32, np.float64)
    assert traffic("misaligned", (1,), (32,), (0, data, y)).arrays["bytes"].sectors["load"] == 8
    assert traffic("misaligned", (1,), (32,), (4, data, y)).arrays["bytes"].sectors["load"] == 9  # bytes 4 to 259
    report = traffic("misaligned", (1,), (1,), (28, data, y))  # bytes 28 to 35
    assert report.arrays["bytes"].requests["load"] == 1 and report.arrays["bytes"].sectors["load"] == 2


def test_atomics_are_counted_per_warp_instruction():
    counter = cuda_emu.zeros(1, np.int32)
    report = traffic("count_all", (2,), (64,), (counter,))
    assert counter.get()[0] == 128
    assert report.arrays["counter"].requests == {"load": 0, "store": 0, "atomic": 4}
    assert report.arrays["counter"].sectors["atomic"] == 4 and report.arrays["counter"].block_sectors == 2


def test_device_arrays_are_aligned_as_cudamalloc_aligns_them():
    for n in (1, 3, 100, 4097):
        assert cuda_emu.empty(n, np.float64).ctypes.data % 256 == 0


# ---- builds ------------------------------------------------------------------------------------------
def test_an_unchanged_source_is_loaded_not_rebuilt_and_a_changed_define_rebuilds(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))
    first = cuda_emu.RawModule(TRAFFIC, "traffic.cu").path
    built = first.stat()
    again = cuda_emu.RawModule(TRAFFIC, "traffic.cu").path
    assert again == first and (again.stat().st_ino, again.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)
    changed = cuda_emu.RawModule("#define UNUSED 1\n" + TRAFFIC, "traffic.cu").path
    assert changed != first and changed.exists() and first.exists()
    assert sorted(path.name for path in (tmp_path / "cuda_emu").glob("*.so")) == sorted([first.name, changed.name])


def test_build_errors_carry_the_compilers_message(monkeypatch):
    with pytest.raises(cuda_emu.BuildError,
                       match=r"(?s)could not build broken.cu:.*broken.cu:2:.*.undeclared_name. was not declared"):
        cuda_emu.RawModule('extern "C" __global__ void broken(int* y)\n{ y[0] = undeclared_name; }\n', "broken.cu")
    with pytest.raises(cuda_emu.BuildError, match="nothing.cu defines no __global__ function"):
        cuda_emu.RawModule("__device__ int twice(int x) { return 2 * x; }\n", "nothing.cu")
    with pytest.raises(cuda_emu.KernelError, match=r"no __global__ function 'missing'.*\['broadcast', 'copy', "):
        cuda_emu.RawModule(TRAFFIC, "traffic.cu").get_function("missing")
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    with pytest.raises(cuda_emu.BuildError, match="'no-such-c\\+\\+-compiler' was not found"):
        cuda_emu.RawModule(TRAFFIC, "traffic.cu")
