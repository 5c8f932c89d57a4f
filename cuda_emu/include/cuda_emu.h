// The CUDA device language as the emulated device compiles it with the host C++ compiler.
//
// A .cu file is compiled unchanged, as one translation unit, with this header force-included
// (g++ -include cuda_emu.h) and ThreadSanitizer's instrumentation, so that every load and store
// of the kernel calls the runtime (runtime.cpp), which bounds-checks it, counts its 32-byte
// sectors, checks it for races and lets the thread block's other threads run.
// Each CUDA thread runs on its own fiber; see runtime.cpp and docs/cuda-emulator.md.
//
// What a kernel may use: threadIdx/blockIdx/blockDim/gridDim/warpSize, __global__/__device__/
// __host__/__forceinline__/__noinline__/__restrict__/__align__, static and extern __shared__
// arrays, __syncthreads, __syncwarp, the *_sync shuffles and votes, __activemask, atomics on
// int/unsigned/long long/unsigned long long/float/double, __ldg, __popc/__ffs/__clz and their
// 64-bit forms, min/max, and <cmath>.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

// ---- qualifiers -------------------------------------------------------------------------
// Kernels are never inlined (into the uninstrumented launch entry), as on the GPU.
#define __global__ __attribute__((noinline))
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
// One instance per thread block: the fibers of a block run on one worker thread, which runs
// one block at a time, so thread-local storage is block-local. A block-scope thread_local is
// static, as a __shared__ variable is; `extern __shared__ T a[];` is the block's dynamic shared
// memory, defined by the build (EMU_DYNAMIC_SHARED) as one buffer per worker thread.
#define __shared__ thread_local

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

// ---- the runtime's interface (runtime.cpp; not instrumented) -------------------------------
extern "C" {
uint3 emu_thread_idx();
uint3 emu_block_idx();
dim3 emu_block_dim();
dim3 emu_grid_dim();
// Warp collectives: op is one of EMU_OP_*; returns this lane's result (a shuffled value's bits,
// a ballot, or a vote). file/line: the call site, for matching and messages.
unsigned long long emu_warp_collective(int op, unsigned mask, unsigned long long bits, int operand, int width,
                                       const char* file, int line);
void emu_syncthreads(const char* file, int line);
unsigned emu_activemask();
void emu_threadfence();
// An atomic read-modify-write of `size` bytes at address (checked, counted, ordered like any
// access); op is one of EMU_ATOMIC_*, kind EMU_KIND_*; returns the old value's bits.
unsigned long long emu_atomic(void* address, int size, int op, int kind, unsigned long long operand,
                              unsigned long long compare);
}

enum { EMU_OP_SHFL, EMU_OP_SHFL_UP, EMU_OP_SHFL_DOWN, EMU_OP_SHFL_XOR, EMU_OP_BALLOT, EMU_OP_ANY, EMU_OP_ALL,
       EMU_OP_SYNCWARP };
enum { EMU_ATOMIC_ADD, EMU_ATOMIC_SUB, EMU_ATOMIC_MAX, EMU_ATOMIC_MIN, EMU_ATOMIC_EXCH, EMU_ATOMIC_CAS };
enum { EMU_KIND_SIGNED, EMU_KIND_UNSIGNED, EMU_KIND_FLOAT };

#define threadIdx (emu_thread_idx())
#define blockIdx (emu_block_idx())
#define blockDim (emu_block_dim())
#define gridDim (emu_grid_dim())
#define warpSize 32

namespace emu {
template <class T>
__forceinline__ unsigned long long to_bits(T value)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp collectives move at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    return bits;
}

template <class T>
__forceinline__ T from_bits(unsigned long long bits)
{
    T value;
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

template <class T>
constexpr int kind()
{
    return std::is_floating_point_v<T> ? EMU_KIND_FLOAT : std::is_signed_v<T> ? EMU_KIND_SIGNED : EMU_KIND_UNSIGNED;
}

template <class T>
__forceinline__ T atomic(T* address, int op, T operand, T compare = T())
{
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics act on 4- or 8-byte words");
    return from_bits<T>(emu_atomic(address, sizeof(T), op, kind<T>(), to_bits(operand), to_bits(compare)));
}
}  // namespace emu

// ---- synchronisation, warp collectives ----------------------------------------------------
#define EMU_SITE const char* emu_file = __builtin_FILE(), int emu_line = __builtin_LINE()

__forceinline__ void __syncthreads(EMU_SITE) { emu_syncthreads(emu_file, emu_line); }
__forceinline__ void __syncwarp(unsigned mask = 0xffffffffu, EMU_SITE)
{
    emu_warp_collective(EMU_OP_SYNCWARP, mask, 0, 0, 32, emu_file, emu_line);
}
__forceinline__ unsigned __activemask() { return emu_activemask(); }
__forceinline__ void __threadfence() { emu_threadfence(); }
__forceinline__ void __threadfence_block() { emu_threadfence(); }

template <class T>
__forceinline__ T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32, EMU_SITE)
{
    return emu::from_bits<T>(emu_warp_collective(EMU_OP_SHFL, mask, emu::to_bits(var), src_lane, width, emu_file,
                                                 emu_line));
}
template <class T>
__forceinline__ T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, EMU_SITE)
{
    return emu::from_bits<T>(emu_warp_collective(EMU_OP_SHFL_UP, mask, emu::to_bits(var), (int)delta, width,
                                                 emu_file, emu_line));
}
template <class T>
__forceinline__ T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, EMU_SITE)
{
    return emu::from_bits<T>(emu_warp_collective(EMU_OP_SHFL_DOWN, mask, emu::to_bits(var), (int)delta, width,
                                                 emu_file, emu_line));
}
template <class T>
__forceinline__ T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32, EMU_SITE)
{
    return emu::from_bits<T>(emu_warp_collective(EMU_OP_SHFL_XOR, mask, emu::to_bits(var), lane_mask, width,
                                                 emu_file, emu_line));
}
__forceinline__ unsigned __ballot_sync(unsigned mask, int predicate, EMU_SITE)
{
    return (unsigned)emu_warp_collective(EMU_OP_BALLOT, mask, predicate != 0, 0, 32, emu_file, emu_line);
}
__forceinline__ int __any_sync(unsigned mask, int predicate, EMU_SITE)
{
    return (int)emu_warp_collective(EMU_OP_ANY, mask, predicate != 0, 0, 32, emu_file, emu_line);
}
__forceinline__ int __all_sync(unsigned mask, int predicate, EMU_SITE)
{
    return (int)emu_warp_collective(EMU_OP_ALL, mask, predicate != 0, 0, 32, emu_file, emu_line);
}

// ---- atomics ------------------------------------------------------------------------------
template <class T>
__forceinline__ T atomicAdd(T* address, T value) { return emu::atomic(address, EMU_ATOMIC_ADD, value); }
template <class T>
__forceinline__ T atomicSub(T* address, T value) { return emu::atomic(address, EMU_ATOMIC_SUB, value); }
template <class T>
__forceinline__ T atomicMax(T* address, T value) { return emu::atomic(address, EMU_ATOMIC_MAX, value); }
template <class T>
__forceinline__ T atomicMin(T* address, T value) { return emu::atomic(address, EMU_ATOMIC_MIN, value); }
template <class T>
__forceinline__ T atomicExch(T* address, T value) { return emu::atomic(address, EMU_ATOMIC_EXCH, value); }
template <class T>
__forceinline__ T atomicCAS(T* address, T compare, T value)
{
    return emu::atomic(address, EMU_ATOMIC_CAS, value, compare);
}

// ---- loads through the read-only cache, bit tricks, math ----------------------------------
template <class T>
__forceinline__ T __ldg(const T* address) { return *address; }

__forceinline__ int __popc(unsigned x) { return __builtin_popcount(x); }
__forceinline__ int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
__forceinline__ int __ffs(int x) { return __builtin_ffs(x); }
__forceinline__ int __ffsll(long long x) { return __builtin_ffsll(x); }
__forceinline__ int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
__forceinline__ int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }

#define EMU_MIN_MAX(T)                                            \
    __forceinline__ T min(T a, T b) { return a < b ? a : b; }     \
    __forceinline__ T max(T a, T b) { return a < b ? b : a; }
EMU_MIN_MAX(int)
EMU_MIN_MAX(unsigned)
EMU_MIN_MAX(long long)
EMU_MIN_MAX(unsigned long long)
#undef EMU_MIN_MAX
__forceinline__ float min(float a, float b) { return fminf(a, b); }
__forceinline__ float max(float a, float b) { return fmaxf(a, b); }
__forceinline__ double min(double a, double b) { return fmin(a, b); }
__forceinline__ double max(double a, double b) { return fmax(a, b); }

// ---- what the build appends after the kernel source ------------------------------------------
// The launch entry of a kernel: unpacks an array of pointers to the arguments into the kernel's
// own parameter types, and describes those parameters (size; for pointers the element size and
// whether the kernel may write through it) so the host side can check what it passes.
namespace emu {
struct ParamInfo {
    int size;          // bytes of the parameter itself
    int element_size;  // bytes of the pointee, 0 for a scalar
    int writable;      // 1 for a pointer to non-const
    int floating;      // 1 for a floating-point scalar or pointee
};

template <class T>
constexpr ParamInfo param_info()
{
    if constexpr (std::is_pointer_v<T>) {
        using E = std::remove_pointer_t<T>;
        return {(int)sizeof(T), (int)sizeof(std::conditional_t<std::is_void_v<E>, char, E>), !std::is_const_v<E>,
                std::is_floating_point_v<E>};
    } else {
        return {(int)sizeof(T), 0, 0, std::is_floating_point_v<T>};
    }
}

template <class... A, std::size_t... I>
__attribute__((no_sanitize_thread)) void call(void (*kernel)(A...), void** args, std::index_sequence<I...>)
{
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <class... A>
struct KernelEntry {
    static constexpr int arity = sizeof...(A);
    static constexpr ParamInfo params[sizeof...(A) + 1] = {param_info<A>()..., {0, 0, 0, 0}};
    __attribute__((no_sanitize_thread)) static void launch(void (*kernel)(A...), void** args)
    {
        call(kernel, args, std::index_sequence_for<A...>{});
    }
};

template <class... A>
KernelEntry<A...> entry_of(void (*)(A...));
}  // namespace emu

#define EMU_KERNEL(name)                                                                             \
    extern "C" __attribute__((no_sanitize_thread)) void emu_entry_##name(void** args)                \
    {                                                                                                \
        decltype(emu::entry_of(&name))::launch(&name, args);                                         \
    }                                                                                                \
    extern "C" int emu_params_##name(const emu::ParamInfo** params)                                  \
    {                                                                                                \
        *params = decltype(emu::entry_of(&name))::params;                                            \
        return decltype(emu::entry_of(&name))::arity;                                                \
    }

// The dynamic shared memory of a thread block: every `extern __shared__` array of the source is
// an alias of this one buffer, as on the GPU, where they all start at the same address.
#define EMU_MAX_DYNAMIC_SHARED (227 * 1024)
#define EMU_DYNAMIC_SHARED_BUFFER                                                                    \
    thread_local __attribute__((aligned(16))) unsigned char emu_dynamic_shared[EMU_MAX_DYNAMIC_SHARED]; \
    extern "C" __attribute__((no_sanitize_thread)) unsigned char* emu_dynamic_shared_base()         \
    {                                                                                                \
        return emu_dynamic_shared;                                                                   \
    }
#define EMU_DYNAMIC_SHARED(name)                                                                     \
    __asm__(".globl " #name "\n.type " #name ", @tls_object\n.set " #name ", emu_dynamic_shared");
