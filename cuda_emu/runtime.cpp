// The emulated CUDA device's runtime: runs a kernel compiled by the host compiler (see
// cuda_emu.h) over a grid, with SIMT semantics, and checks every memory access it makes.
//
// Execution model
//   - Thread blocks are claimed in index order from a shared counter by `workers` OS threads,
//     so blocks run truly concurrently and atomics act between real threads.
//   - The threads of a block are fibers on their worker's OS thread. Every global or
//     shared access, atomic, barrier and warp collective parks the calling fiber and returns to
//     the block's scheduler, which picks a warp at random (seeded) and, within it, resumes the
//     lanes parked at the lowest code address together: one warp instruction (lanes that
//     diverged reconverge where their paths meet, as the hardware's min-PC rule does). Warps
//     interleave at every instruction, so a missing barrier changes results.
//   - __syncthreads waits for every thread of the block at one call site; a warp collective for
//     exactly the lanes of its mask at one call site. A thread that exits while others wait for
//     it, a mask naming lanes that do not exist or not the caller, or a block in which no fiber
//     can run (threads waiting at different barriers) is an error that names the kernel and the
//     collective: the scheduler knows every fiber's state, so it never hangs on a wait. A grid
//     that spins on global memory is stopped by the launch's time limit.
//
// Checks (each an error with the kernel, the thread, the array and the index)
//   - Bounds: an access must lie inside one argument array, the block's dynamic shared memory
//     (its launch size, not the buffer's), the kernel's static shared memory, the fiber's stack
//     or the module's own data.
//   - Races (as compute-sanitizer's racecheck, for shared memory; and for global arrays the
//     kernel may write): two accesses to one word by different threads, at least one a write,
//     not separated by a __syncthreads (or a __syncwarp within a warp); for global memory,
//     accesses from different blocks to a word written in the launch (atomics excepted).
//   - Garbage: dynamic and static shared memory start each block as 0xff bytes (NaN, -1), and
//     the kernel's locals start as a pattern (-ftrivial-auto-var-init=pattern).
//
// Memory traffic: for each warp instruction on a global array, the distinct 32-byte sectors its
// lanes touch (as the hardware coalesces them), per array: summed over instructions (no cache
// reuse) and distinct per thread block (perfect reuse within a block).

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <unordered_set>
#include <vector>

#include "cuda_emu.h"

namespace {

constexpr int WARP = 32;
constexpr size_t STACK_BYTES = 256 * 1024;
constexpr int SHARED_DYNAMIC = -1;
constexpr int SHARED_STATIC = -2;

}  // namespace

// ---- the launch, as the host side (device.py) lays it out: every field 8 bytes -----------------
extern "C" {
struct EmuRegion {
    uint64_t begin, end;      // [begin, end) bytes of one argument array
    int64_t element_size;     // bytes per element (the kernel's pointee type)
    int64_t writable;         // the kernel may write through it: races are checked on `shadow`
    const char* name;         // the parameter's name
    uint64_t* shadow;         // five words per element (writable arrays, see check_global), zeroed by the host
    // filled by the runtime: per access kind (0 load, 1 store, 2 atomic)
    uint64_t requests[3];     // warp instructions
    uint64_t sectors[3];      // distinct 32-byte sectors per warp instruction, summed
    uint64_t block_sectors;   // distinct sectors per thread block, summed over blocks
};

struct EmuLaunch {
    void (*entry)(void**);
    void** args;
    const char* kernel;
    uint64_t grid[3], block[3];
    uint64_t shared_bytes;
    unsigned char* (*dynamic_shared_base)();
    EmuRegion* regions;
    int64_t n_regions;
    int64_t workers;
    uint64_t seed;
    double timeout_seconds;
    // filled by the runtime
    uint64_t warp_instructions;
    uint64_t error_pc[2];     // code addresses (module offsets) of the failing accesses, or 0
    char error[2048];
};
}

namespace {

// ---- fibers ------------------------------------------------------------------------------------
#if defined(__x86_64__)
// A switch saves what a call must preserve under the System V ABI (rbx, rbp, r12-r15, MXCSR and
// the x87 control word) on the old stack and restores it from the new one: about 20x faster than
// swapcontext, which makes a system call for the signal mask at every switch, and the emulator
// switches at every access.
extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl emu_switch
    .hidden emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

struct Context {
    void* sp = nullptr;
};

void switch_context(Context& save, Context& load) { emu_switch(&save.sp, load.sp); }

// A context that starts `entry` (which must never return) on the given stack: the frame
// emu_switch pops (control words, six registers, the return address), placed so that `entry`
// starts with the stack aligned as after a call.
void make_context(Context& c, char* stack, size_t bytes, void (*entry)())
{
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15);
    uint64_t* frame = reinterpret_cast<uint64_t*>(top - 72);
    frame[0] = 0x1F80 | uint64_t(0x037F) << 32;  // MXCSR and x87 control word at their defaults
    for (int i = 1; i < 7; ++i) frame[i] = 0;
    frame[7] = reinterpret_cast<uint64_t>(entry);
    c.sp = frame;
}
#else
struct Context {
    ucontext_t uc;
};

void switch_context(Context& save, Context& load) { swapcontext(&save.uc, &load.uc); }

void make_context(Context& c, char* stack, size_t bytes, void (*entry)())
{
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif

enum class State { Ready, WaitWarp, WaitBlock, Done };
enum Access { Load = 0, Store = 1, Atomic = 2, Collective = 3, Barrier = 4, Start = 5 };

struct Fiber {
    Context context;
    char* stack = nullptr;
    State state = State::Ready;
    uintptr_t pc = 0;           // where it is parked; 0 before it starts
    // the pending access
    uintptr_t address = 0;
    int size = 0;
    int access = Start;
    int region = 0;
    // the pending collective or barrier
    int op = 0;
    unsigned mask = 0;
    unsigned long long bits = 0;
    int operand = 0, width = WARP;
    const char* file = nullptr;
    int line = 0;
    unsigned long long result = 0;
    // identity and synchronisation
    uint3 tid{};
    int linear = 0, lane = 0, warp = 0;
    uint32_t epoch = 0;          // __syncthreads passed
    // per lane of its warp: the warp's __syncwarp generation at the last __syncwarp that this lane
    // and that one both joined (0: none)
    uint32_t synced[WARP] = {};
    uint64_t waited = 0;         // scheduling steps since it last ran
};

// One word of shared memory's race shadow (racecheck's bookkeeping, 4-byte granularity).
// Each access is recorded with the block's __syncthreads epoch and its warp's __syncwarp generation
// at the time (the latest of the readers' for several readers).
struct SharedWord {
    uint32_t serial = 0;         // the block it describes (older ones are empty)
    int32_t writer = -1, reader = -1;  // thread (linear id); reader -2: several
    int32_t reader_warp = -1;    // -2: several warps
    uint32_t reader_lanes = 0;   // the readers' lanes, while they are of one warp
    uint32_t write_epoch = 0, write_sync = 0, read_epoch = 0, read_sync = 0;
    uintptr_t write_pc = 0, read_pc = 0;
};

struct Shared {  // between the workers of one launch
    std::atomic<uint64_t> next_block{0};
    std::atomic<bool> failed{false};
    std::chrono::steady_clock::time_point deadline;
};

struct Worker;
thread_local Worker* current_worker = nullptr;

struct Worker {
    EmuLaunch* launch;
    Shared* shared;
    Context scheduler;
    std::vector<Fiber> fibers;
    // Who is where, kept by set_state so that no step scans every thread: per warp, the lanes
    // ready to run, waiting at a warp collective, and exited; per block, the threads at a barrier.
    unsigned ready[32] = {}, waiting[32] = {}, exited[32] = {};
    int at_barrier = 0;
    int current = -1;            // the running fiber, -1 in the scheduler
    unsigned active_group = 0;   // lanes resumed together in the current step
    uint3 block_idx{};
    uint32_t block_serial = 0;
    uint32_t warp_generation[32] = {};
    std::mt19937_64 rng;
    uintptr_t dynamic_begin = 0, tls_begin = 0, tls_end = 0;
    std::vector<std::pair<uintptr_t, uintptr_t>> module_data;
    std::vector<SharedWord> shared_shadow;
    std::unordered_set<uint64_t> block_touched;
    std::vector<EmuRegion> counts;   // this worker's traffic per region
    uint64_t warp_instructions = 0;
    uint64_t steps = 0;
    bool failed = false;
};

void set_state(Worker& w, Fiber& f, State state)
{
    unsigned bit = 1u << f.lane;
    w.ready[f.warp] &= ~bit, w.waiting[f.warp] &= ~bit;
    w.at_barrier -= f.state == State::WaitBlock;
    f.state = state;
    switch (state) {
    case State::Ready: w.ready[f.warp] |= bit; break;
    case State::WaitWarp: w.waiting[f.warp] |= bit; break;
    case State::WaitBlock: w.at_barrier += 1; break;
    case State::Done: w.exited[f.warp] |= bit; break;
    }
}

// ---- errors -----------------------------------------------------------------------------------
uintptr_t module_offset(uintptr_t pc)
{
    Dl_info info;
    if (pc && dladdr(reinterpret_cast<void*>(pc), &info) && info.dli_fbase) {
        return pc - reinterpret_cast<uintptr_t>(info.dli_fbase);
    }
    return pc;
}

void describe_thread(const Worker& w, const Fiber& f, char* out, size_t n)
{
    snprintf(out, n, "thread (%u,%u,%u) of block (%u,%u,%u)", f.tid.x, f.tid.y, f.tid.z, w.block_idx.x,
             w.block_idx.y, w.block_idx.z);
}

// Records the launch's first error (the others are consequences) and marks this worker failed.
__attribute__((format(printf, 4, 5))) void fail(Worker& w, uintptr_t pc0, uintptr_t pc1, const char* format, ...)
{
    w.failed = true;
    bool expected = false;
    if (!w.shared->failed.compare_exchange_strong(expected, true)) {
        return;
    }
    int used = snprintf(w.launch->error, sizeof w.launch->error, "%s: ", w.launch->kernel);
    va_list args;
    va_start(args, format);
    vsnprintf(w.launch->error + used, sizeof w.launch->error - used, format, args);
    va_end(args);
    w.launch->error_pc[0] = module_offset(pc0);
    w.launch->error_pc[1] = module_offset(pc1);
}

// Back to the scheduler for good: the block is abandoned (its fibers hold no resources).
[[noreturn]] void abandon(Worker& w)
{
    Fiber& f = w.fibers[w.current];
    switch_context(f.context, w.scheduler);
    __builtin_trap();  // never resumed
}

void park(Worker& w)
{
    Fiber& f = w.fibers[w.current];
    switch_context(f.context, w.scheduler);
    if (w.failed) {
        abandon(w);
    }
}

const char* lanes_text(unsigned lanes, char* out, size_t n)
{
    size_t used = 0;
    out[0] = 0;
    for (int lane = 0; lane < WARP && used < n; ++lane) {
        if (!(lanes >> lane & 1)) continue;
        int last = lane;
        while (last + 1 < WARP && (lanes >> (last + 1) & 1)) ++last;
        used += snprintf(out + used, n - used, used ? ",%d" : "%d", lane);
        if (last > lane) used += snprintf(out + used, n - used, "-%d", last);
        lane = last;
    }
    return out;
}

const char* op_name(int op)
{
    static const char* names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                  "__ballot_sync", "__any_sync", "__all_sync", "__syncwarp"};
    return names[op];
}

// A collective or barrier waits for a lane or thread that has exited (it can never complete).
void fail_exited_lane(Worker& w, int op, const char* file, int line, int lane, int warp, unsigned mask)
{
    fail(w, 0, 0, "%s (%s:%d) waits for lane %d of warp %d in block (%u,%u,%u), which has exited: not every lane of "
         "the mask %#x reaches it (divergence or an early return)", op_name(op), file, line, lane, warp,
         w.block_idx.x, w.block_idx.y, w.block_idx.z, mask);
}

void fail_exited_thread(Worker& w, const char* file, int line, int thread)
{
    fail(w, 0, 0, "__syncthreads (%s:%d) in block (%u,%u,%u) waits for thread %d, which has exited: every thread "
         "of the block must reach it (an early return, or a barrier in divergent code)", file, line, w.block_idx.x,
         w.block_idx.y, w.block_idx.z, thread);
}

// ---- where an address lies --------------------------------------------------------------------
const char* access_name(int access)
{
    return access == Store ? "write" : access == Atomic ? "atomic" : "read";
}

[[noreturn]] void out_of_bounds(Worker& w, uintptr_t address, int size, int access, uintptr_t pc)
{
    Fiber& f = w.fibers[w.current];
    char who[96];
    describe_thread(w, f, who, sizeof who);
    // the argument array nearest to the address names the index
    const EmuRegion* nearest = nullptr;
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < w.launch->n_regions; ++i) {
        const EmuRegion& r = w.launch->regions[i];
        uint64_t distance = address < r.begin ? r.begin - address : address - r.end;
        if (distance < best) best = distance, nearest = &r;
    }
    uintptr_t shared_end = w.dynamic_begin + w.launch->shared_bytes;
    if (address >= w.dynamic_begin && address < w.dynamic_begin + EMU_MAX_DYNAMIC_SHARED) {
        fail(w, pc, 0, "out-of-bounds %s of %d bytes at byte %lld of dynamic shared memory, which the launch "
             "sized to %llu bytes, by %s", access_name(access), size, (long long)(address - w.dynamic_begin),
             (unsigned long long)w.launch->shared_bytes, who);
    } else if (address >= w.tls_begin && address < w.tls_end + (1u << 20)) {
        // past the kernel's static __shared__ variables (the host names the one overrun)
        fail(w, pc, 0, "out-of-bounds %s of %d bytes at static shared memory at byte %lld, past the last __shared__ "
             "variable, by %s", access_name(access), size, (long long)(address - w.tls_begin), who);
    } else if (nearest && best < (1u << 20)) {
        long long delta = (long long)address - (long long)nearest->begin, size_of = nearest->element_size;
        long long index = delta >= 0 ? delta / size_of : -((-delta + size_of - 1) / size_of);
        fail(w, pc, 0, "out-of-bounds %s of %d bytes at %s[%lld] (%s has %lld elements of %lld bytes) by %s",
             access_name(access), size, nearest->name, index, nearest->name,
             (long long)((nearest->end - nearest->begin) / nearest->element_size), (long long)nearest->element_size,
             who);
    } else {
        fail(w, pc, 0, "%s of %d bytes at address %#llx, outside every argument array and shared memory, by %s "
             "(shared memory ends at %#llx)", access_name(access), size, (unsigned long long)address, who,
             (unsigned long long)shared_end);
    }
    abandon(w);
}

// The region of [address, address + size): an argument index, SHARED_DYNAMIC, SHARED_STATIC, or
// INT32_MIN for the fiber's stack and the module's own data (neither checked nor counted).
int classify(Worker& w, uintptr_t address, int size, int access, uintptr_t pc)
{
    const Fiber& f = w.fibers[w.current];
    uintptr_t end = address + size;
    uintptr_t stack = reinterpret_cast<uintptr_t>(f.stack);
    if (address >= stack && end <= stack + STACK_BYTES) return INT32_MIN;
    for (int i = 0; i < w.launch->n_regions; ++i) {
        const EmuRegion& r = w.launch->regions[i];
        if (address >= r.begin && end <= r.end) return i;
    }
    if (address >= w.dynamic_begin && end <= w.dynamic_begin + w.launch->shared_bytes) return SHARED_DYNAMIC;
    bool in_dynamic_buffer = end > w.dynamic_begin && address < w.dynamic_begin + EMU_MAX_DYNAMIC_SHARED;
    if (!in_dynamic_buffer && address >= w.tls_begin && end <= w.tls_end) return SHARED_STATIC;
    for (auto [begin, stop] : w.module_data) {
        if (address >= begin && end <= stop) return INT32_MIN;
    }
    out_of_bounds(w, address, size, access, pc);
}

// ---- races ------------------------------------------------------------------------------------
// Whether an access by `thread` at barrier epoch `epoch` and __syncwarp generation `sync` (of its
// warp) happened before `now`'s: same thread, a __syncthreads completed since, or a __syncwarp
// that both lanes joined.
bool ordered(const Fiber& now, int thread, uint32_t epoch, uint32_t sync)
{
    if (thread == now.linear || now.epoch > epoch) return true;
    return thread / WARP == now.warp && now.synced[thread % WARP] > sync;
}

// Whether every read recorded in `s` happened before `now`'s access.
bool reads_ordered(const Fiber& now, const SharedWord& s)
{
    if (s.reader == -1) return true;
    if (s.reader >= 0) return ordered(now, s.reader, s.read_epoch, s.read_sync);
    if (now.epoch > s.read_epoch) return true;
    if (s.reader_warp != now.warp) return false;
    for (unsigned lanes = s.reader_lanes & ~(1u << now.lane); lanes; lanes &= lanes - 1) {
        if (now.synced[__builtin_ctz(lanes)] <= s.read_sync) return false;
    }
    return true;
}

void shared_race(Worker& w, const Fiber& f, const char* kind, int other, uintptr_t other_pc, uintptr_t address)
{
    char who[96];
    describe_thread(w, f, who, sizeof who);
    const char* space = address >= w.dynamic_begin && address < w.dynamic_begin + EMU_MAX_DYNAMIC_SHARED
                            ? "dynamic" : "static";
    uintptr_t base = space[0] == 'd' ? w.dynamic_begin : w.tls_begin;
    char others[64];
    if (other >= 0) {
        snprintf(others, sizeof others, "thread %d (warp %d, lane %d)", other, other / WARP, other % WARP);
    } else {
        snprintf(others, sizeof others, "several threads");
    }
    fail(w, f.pc, other_pc, "%s race on %s shared memory at byte %lld: %s and %s access it with no __syncthreads "
         "(or __syncwarp within a warp) between", kind, space, (long long)(address - base), others, who);
}

void check_shared(Worker& w, Fiber& f, uintptr_t address, int size, bool write)
{
    for (uintptr_t word = address & ~uintptr_t(3); word < address + size; word += 4) {
        SharedWord& s = w.shared_shadow[(word - w.tls_begin) / 4];
        if (s.serial != w.block_serial) s = SharedWord{}, s.serial = w.block_serial;
        uint32_t sync = w.warp_generation[f.warp];
        if (s.writer >= 0 && !ordered(f, s.writer, s.write_epoch, s.write_sync)) {
            shared_race(w, f, write ? "write-after-write" : "read-after-write", s.writer, s.write_pc, word);
            abandon(w);
        }
        if (write) {
            if (!reads_ordered(f, s)) {
                shared_race(w, f, "write-after-read", s.reader, s.read_pc, word);
                abandon(w);
            }
            s.writer = f.linear, s.write_epoch = f.epoch, s.write_sync = sync, s.write_pc = f.pc;
            s.reader = -1;
        } else if (reads_ordered(f, s)) {
            // every earlier read happened before this one, so a write ordered after it is after them all
            s.reader = f.linear, s.reader_warp = f.warp, s.reader_lanes = 1u << f.lane;
            s.read_epoch = f.epoch, s.read_sync = sync, s.read_pc = f.pc;
        } else {
            s.reader_lanes = s.reader_warp == f.warp ? s.reader_lanes | 1u << f.lane : 0;
            s.reader_warp = s.reader_warp == f.warp ? f.warp : -2;
            s.reader = -2;
            s.read_epoch = std::max(s.read_epoch, f.epoch), s.read_sync = std::max(s.read_sync, sync);
            s.read_pc = f.pc;
        }
    }
}

// Global shadow, five words per element of each array the kernel may write:
//   [0] the last writing thread's global linear id + 1 (0: no thread wrote the element in this launch);
//   [1] its barrier epoch (high half) and its warp's __syncwarp generation (low half) at the write;
//   [2] who read the element since that write (or since the launch began): 0 nobody, a thread's global
//       linear id + 1, READERS_OF_BLOCK | (block's linear id + 1) for several threads of one block, or
//       READERS_OF_BLOCKS for threads of several blocks;
//   [3] the readers' barrier epoch and __syncwarp generation, as [1] (the latest of several readers');
//   [4] the readers' warp (high half; all ones: several warps) and their lanes in it (low half).
// Words [0] and [2] are exchanged atomically, so that accesses from different blocks (on different
// workers) see each other; [1], [3] and [4] are only compared within a block, whose threads run on one
// worker. A write resets [2]: later reads are checked against the write instead.
constexpr uint64_t READERS_OF_BLOCK = 1ull << 63;
constexpr uint64_t READERS_OF_BLOCKS = UINT64_MAX;

struct GlobalThreads {  // the current thread, in the global numbering of the shadow
    uint64_t threads, block, me;
};

uint64_t reader_block(const GlobalThreads& g, uint64_t reader)
{
    return reader & READERS_OF_BLOCK ? (reader & ~READERS_OF_BLOCK) - 1 : (reader - 1) / g.threads;
}

// Whether every read recorded in `reader` (not READERS_OF_BLOCKS), made in the current block at
// `when`, by the lanes `who`, happened before `now`'s access.
bool global_reads_ordered(const Fiber& now, const GlobalThreads& g, uint64_t reader, uint64_t when, uint64_t who)
{
    uint32_t epoch = (uint32_t)(when >> 32), sync = (uint32_t)when;
    if (!(reader & READERS_OF_BLOCK)) return ordered(now, (int)((reader - 1) % g.threads), epoch, sync);
    if (now.epoch > epoch) return true;
    if ((uint32_t)(who >> 32) != (uint32_t)now.warp) return false;
    for (uint32_t lanes = (uint32_t)who & ~(1u << now.lane); lanes; lanes &= lanes - 1) {
        if (now.synced[__builtin_ctz(lanes)] <= sync) return false;
    }
    return true;
}

void record_global_read(const Fiber& f, const GlobalThreads& g, uint64_t* shadow, uint32_t sync)
{
    uint64_t reader = __atomic_load_n(&shadow[2], __ATOMIC_RELAXED);
    for (;;) {
        if (reader == READERS_OF_BLOCKS) return;
        uint64_t when = (uint64_t)f.epoch << 32 | sync, who = (uint64_t)f.warp << 32 | 1u << f.lane, next = g.me;
        if (reader != 0 && reader != g.me) {
            uint64_t old_when = __atomic_load_n(&shadow[3], __ATOMIC_RELAXED);
            uint64_t old_who = __atomic_load_n(&shadow[4], __ATOMIC_RELAXED);
            if (reader_block(g, reader) != g.block) {
                next = READERS_OF_BLOCKS;
            } else if (!global_reads_ordered(f, g, reader, old_when, old_who)) {
                // several readers of this block: the latest epoch and generation, the lanes while of one warp
                next = READERS_OF_BLOCK | (g.block + 1);
                when = std::max(old_when >> 32, when >> 32) << 32 | std::max((uint32_t)old_when, sync);
                who = (old_who >> 32) == (uint64_t)f.warp ? old_who | 1u << f.lane : 0xffffffffull << 32;
            }
            // else every earlier read happened before this one, so a write ordered after it is after them all
        }
        if (__atomic_compare_exchange_n(&shadow[2], &reader, next, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            if (next != READERS_OF_BLOCKS) {
                __atomic_store_n(&shadow[3], when, __ATOMIC_RELAXED);
                __atomic_store_n(&shadow[4], who, __ATOMIC_RELAXED);
            }
            return;
        }
    }
}

[[noreturn]] void global_race(Worker& w, const Fiber& f, const EmuRegion& r, uint64_t e, const char* kind,
                              const char* others, bool other_blocks, bool write)
{
    char who[96];
    describe_thread(w, f, who, sizeof who);
    fail(w, f.pc, 0, "%s race on %s[%llu]: %s in this launch, and %s %s it with no __syncthreads (or __syncwarp "
         "within a warp) between%s", kind, r.name, (unsigned long long)e, others, who, write ? "writes" : "reads",
         other_blocks ? " (threads of different blocks can only meet through atomics)" : "");
    abandon(w);
}

void check_global(Worker& w, Fiber& f, EmuRegion& r, uintptr_t address, int size, bool write)
{
    GlobalThreads g;
    g.threads = w.launch->block[0] * w.launch->block[1] * w.launch->block[2];
    g.block = w.block_idx.x + w.launch->grid[0] * (w.block_idx.y + w.launch->grid[1] * w.block_idx.z);
    g.me = g.block * g.threads + f.linear + 1;
    uint32_t sync = w.warp_generation[f.warp];
    char others[96];
    for (uintptr_t e = (address - r.begin) / r.element_size; e <= (address + size - 1 - r.begin) / r.element_size;
         ++e) {
        uint64_t* shadow = &r.shadow[5 * e];
        uint64_t writer = write ? __atomic_exchange_n(&shadow[0], g.me, __ATOMIC_RELAXED)
                                : __atomic_load_n(&shadow[0], __ATOMIC_RELAXED);
        uint64_t when = __atomic_load_n(&shadow[1], __ATOMIC_RELAXED);
        if (write) __atomic_store_n(&shadow[1], (uint64_t)f.epoch << 32 | sync, __ATOMIC_RELAXED);
        if (writer && writer != g.me) {
            uint64_t writer_block = (writer - 1) / g.threads;
            int writer_thread = (int)((writer - 1) % g.threads);
            if (writer_block != g.block || !ordered(f, writer_thread, (uint32_t)(when >> 32), (uint32_t)when)) {
                snprintf(others, sizeof others, "thread %d of block %llu wrote it", writer_thread,
                         (unsigned long long)writer_block);
                global_race(w, f, r, e, write ? "write-after-write" : "read-after-write", others,
                            writer_block != g.block, write);
            }
        }
        if (!write) {
            record_global_read(f, g, shadow, sync);
            continue;
        }
        uint64_t reader = __atomic_exchange_n(&shadow[2], 0, __ATOMIC_RELAXED);
        if (!reader || reader == g.me) continue;
        bool same_block = reader != READERS_OF_BLOCKS && reader_block(g, reader) == g.block;
        if (same_block && global_reads_ordered(f, g, reader, __atomic_load_n(&shadow[3], __ATOMIC_RELAXED),
                                               __atomic_load_n(&shadow[4], __ATOMIC_RELAXED))) {
            continue;
        }
        if (reader == READERS_OF_BLOCKS) {
            snprintf(others, sizeof others, "threads of several blocks read it");
        } else if (reader & READERS_OF_BLOCK) {
            snprintf(others, sizeof others, "several threads of block %llu read it",
                     (unsigned long long)reader_block(g, reader));
        } else {
            snprintf(others, sizeof others, "thread %d of block %llu read it", (int)((reader - 1) % g.threads),
                     (unsigned long long)reader_block(g, reader));
        }
        global_race(w, f, r, e, "write-after-read", others, !same_block, true);
    }
}

// ---- one memory access from kernel code --------------------------------------------------------
void access(uintptr_t address, int size, int kind, uintptr_t pc)
{
    Worker* w = current_worker;
    if (!w || w->current < 0) return;  // not kernel code (module start-up)
    int region = classify(*w, address, size, kind, pc);
    if (region == INT32_MIN) return;
    Fiber& f = w->fibers[w->current];
    f.address = address, f.size = size, f.access = kind, f.region = region, f.pc = pc;
    set_state(*w, f, State::Ready);
    park(*w);
    if (kind == Atomic) return;
    if (region < 0) {
        check_shared(*w, f, address, size, kind == Store);
    } else if (w->launch->regions[region].writable) {
        check_global(*w, f, w->launch->regions[region], address, size, kind == Store);
    }
}

}  // namespace

// ---- ThreadSanitizer's hooks: every load and store of the kernel ------------------------------
// The kernel is compiled with -fsanitize=thread but not linked with its runtime: these are the
// calls the instrumentation makes (no function entry/exit hooks, see build.py).
#define EMU_HOOK(name, n, kind) \
    extern "C" void name(void* a) { access((uintptr_t)a, n, kind, (uintptr_t)__builtin_return_address(0)); }
EMU_HOOK(__tsan_read1, 1, Load)
EMU_HOOK(__tsan_read2, 2, Load)
EMU_HOOK(__tsan_read4, 4, Load)
EMU_HOOK(__tsan_read8, 8, Load)
EMU_HOOK(__tsan_read16, 16, Load)
EMU_HOOK(__tsan_write1, 1, Store)
EMU_HOOK(__tsan_write2, 2, Store)
EMU_HOOK(__tsan_write4, 4, Store)
EMU_HOOK(__tsan_write8, 8, Store)
EMU_HOOK(__tsan_write16, 16, Store)
EMU_HOOK(__tsan_unaligned_read2, 2, Load)
EMU_HOOK(__tsan_unaligned_read4, 4, Load)
EMU_HOOK(__tsan_unaligned_read8, 8, Load)
EMU_HOOK(__tsan_unaligned_read16, 16, Load)
EMU_HOOK(__tsan_unaligned_write2, 2, Store)
EMU_HOOK(__tsan_unaligned_write4, 4, Store)
EMU_HOOK(__tsan_unaligned_write8, 8, Store)
EMU_HOOK(__tsan_unaligned_write16, 16, Store)
#undef EMU_HOOK
extern "C" void __tsan_read_range(void* a, unsigned long n)
{
    access((uintptr_t)a, (int)n, Load, (uintptr_t)__builtin_return_address(0));
}
extern "C" void __tsan_write_range(void* a, unsigned long n)
{
    access((uintptr_t)a, (int)n, Store, (uintptr_t)__builtin_return_address(0));
}
// Each instrumented module's constructor calls it; there is nothing to set up.
extern "C" void __tsan_init() {}

// ---- built-in variables, __threadfence ------------------------------------------------------------
extern "C" uint3 emu_thread_idx() { return current_worker->fibers[current_worker->current].tid; }
extern "C" uint3 emu_block_idx() { return current_worker->block_idx; }
extern "C" dim3 emu_block_dim()
{
    const uint64_t* b = current_worker->launch->block;
    return dim3{(unsigned)b[0], (unsigned)b[1], (unsigned)b[2]};
}
extern "C" dim3 emu_grid_dim()
{
    const uint64_t* g = current_worker->launch->grid;
    return dim3{(unsigned)g[0], (unsigned)g[1], (unsigned)g[2]};
}
extern "C" unsigned emu_activemask() { return current_worker->active_group; }
// In the runtime, not inline in the kernel: -fsanitize=thread does not support fences (-Wtsan).
extern "C" void emu_threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

namespace {

int threads_in_warp(const Worker& w, int warp)
{
    return std::min<int>(WARP, (int)w.fibers.size() - warp * WARP);
}

// Called by the last lane of `mask` to arrive at a collective: every lane's result, then all
// of them runnable again.
void complete_collective(Worker& w, int warp, unsigned mask)
{
    Fiber* lanes = &w.fibers[warp * WARP];
    const Fiber& first = lanes[__builtin_ctz(mask)];
    unsigned votes = 0;
    for (int lane = 0; lane < WARP; ++lane) {
        if (mask >> lane & 1) votes |= (lanes[lane].bits ? 1u : 0u) << lane;
    }
    if (first.op == EMU_OP_SYNCWARP) {
        uint32_t generation = ++w.warp_generation[warp];
        for (int lane = 0; lane < WARP; ++lane) {
            for (int other = 0; other < WARP; ++other) {
                if (mask >> lane & mask >> other & 1) lanes[lane].synced[other] = generation;
            }
        }
    }
    for (int lane = 0; lane < WARP; ++lane) {
        if (!(mask >> lane & 1)) continue;
        Fiber& f = lanes[lane];
        int width = f.width, base = lane & ~(width - 1), source = lane;
        switch (f.op) {
        case EMU_OP_SHFL: source = base + (f.operand & (width - 1)); break;
        case EMU_OP_SHFL_UP: source = lane - base >= f.operand ? lane - f.operand : lane; break;
        case EMU_OP_SHFL_DOWN: source = lane - base + f.operand < width ? lane + f.operand : lane; break;
        // As PTX's shfl.bfly: a lane may read from its own or an earlier group of `width` lanes;
        // a source in a later group (or past the warp) gives the lane its own value.
        case EMU_OP_SHFL_XOR:
            source = (unsigned)(lane ^ f.operand) < (unsigned)(base + width) ? lane ^ f.operand : lane;
            break;
        default: break;
        }
        if (f.op <= EMU_OP_SHFL_XOR && !(mask >> source & 1)) {
            char who[96], lanes_buf[128];
            describe_thread(w, f, who, sizeof who);
            fail(w, f.pc, 0, "%s (%s:%d) by %s reads lane %d, which is not in its mask (lanes %s)", op_name(f.op),
                 f.file, f.line, who, source, lanes_text(mask, lanes_buf, sizeof lanes_buf));
            return;
        }
        switch (f.op) {
        case EMU_OP_BALLOT: f.result = votes; break;
        case EMU_OP_ANY: f.result = votes != 0; break;
        case EMU_OP_ALL: f.result = votes == mask; break;
        default: f.result = lanes[source].bits;
        }
        set_state(w, f, State::Ready);
    }
}

}  // namespace

extern "C" unsigned long long emu_warp_collective(int op, unsigned mask, unsigned long long bits, int operand,
                                                  int width, const char* file, int line)
{
    Worker& w = *current_worker;
    Fiber& f = w.fibers[w.current];
    unsigned existing = threads_in_warp(w, f.warp) == WARP ? ~0u : (1u << threads_in_warp(w, f.warp)) - 1;
    bool bad_width = op <= EMU_OP_SHFL_XOR && (width < 1 || width > WARP || (width & (width - 1)));
    if (!(mask >> f.lane & 1) || (mask & ~existing) || bad_width) {
        char who[96], lanes_buf[128];
        describe_thread(w, f, who, sizeof who);
        if (!(mask >> f.lane & 1)) {
            fail(w, 0, 0, "%s (%s:%d) by %s: its mask %#x does not include the calling lane %d", op_name(op), file,
                 line, who, mask, f.lane);
        } else if (mask & ~existing) {
            fail(w, 0, 0, "%s (%s:%d) by %s: its mask %#x names lanes %s, which do not exist (warp %d has %d threads: "
                 "the block size is not a multiple of 32)", op_name(op), file, line, who, mask,
                 lanes_text(mask & ~existing, lanes_buf, sizeof lanes_buf), f.warp, threads_in_warp(w, f.warp));
        } else {
            fail(w, 0, 0, "%s (%s:%d) by %s: width %d is not a power of two up to 32", op_name(op), file, line, who,
                 width);
        }
        abandon(w);
    }
    f.op = op, f.mask = mask, f.bits = bits, f.operand = operand, f.width = width, f.file = file, f.line = line;
    f.access = Collective;
    f.pc = (uintptr_t)__builtin_return_address(0);
    set_state(w, f, State::WaitWarp);
    if (unsigned gone = w.exited[f.warp] & mask) {
        fail_exited_lane(w, op, file, line, __builtin_ctz(gone), f.warp, mask);
        abandon(w);
    }
    // Complete it if every lane of the mask is here, at this collective.
    if ((w.waiting[f.warp] & mask) == mask) {
        const Fiber* lanes = &w.fibers[f.warp * WARP];
        bool complete = true;
        for (unsigned rest = mask; rest && complete; rest &= rest - 1) {
            const Fiber& other = lanes[__builtin_ctz(rest)];
            complete = other.op == op && other.mask == mask && other.file == file && other.line == line;
        }
        if (complete) complete_collective(w, f.warp, mask);
    }
    park(w);
    return f.result;
}

extern "C" void emu_syncthreads(const char* file, int line)
{
    Worker& w = *current_worker;
    Fiber& f = w.fibers[w.current];
    f.file = file, f.line = line, f.access = Barrier, f.op = -1;
    f.pc = (uintptr_t)__builtin_return_address(0);
    set_state(w, f, State::WaitBlock);
    for (int warp = 0; warp * WARP < (int)w.fibers.size(); ++warp) {
        if (w.exited[warp]) {
            fail_exited_thread(w, file, line, warp * WARP + __builtin_ctz(w.exited[warp]));
            abandon(w);
        }
    }
    if (w.at_barrier == (int)w.fibers.size()) {
        bool one_site = std::all_of(w.fibers.begin(), w.fibers.end(),
                                    [&](const Fiber& other) { return other.file == file && other.line == line; });
        if (one_site) {
            for (Fiber& other : w.fibers) other.epoch += 1, set_state(w, other, State::Ready);
        }
    }
    park(w);
}

extern "C" unsigned long long emu_atomic(void* address, int size, int op, int kind, unsigned long long operand,
                                         unsigned long long compare)
{
    access((uintptr_t)address, size, Atomic, (uintptr_t)__builtin_return_address(0));
    auto apply = [&](auto* word, auto value, auto expected) -> unsigned long long {
        using T = std::remove_pointer_t<decltype(word)>;
        T old;
        __atomic_load(word, &old, __ATOMIC_RELAXED);
        for (;;) {
            T next;
            switch (op) {
            case EMU_ATOMIC_ADD: next = old + value; break;
            case EMU_ATOMIC_SUB: next = old - value; break;
            case EMU_ATOMIC_MAX: next = old < value ? value : old; break;
            case EMU_ATOMIC_MIN: next = value < old ? value : old; break;
            case EMU_ATOMIC_EXCH: next = value; break;
            default: next = old == expected ? value : old;
            }
            if (__atomic_compare_exchange(word, &old, &next, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) break;
        }
        return emu::to_bits(old);
    };
    if (kind == EMU_KIND_FLOAT) {
        return size == 4 ? apply((float*)address, emu::from_bits<float>(operand), emu::from_bits<float>(compare))
                         : apply((double*)address, emu::from_bits<double>(operand), emu::from_bits<double>(compare));
    }
    if (kind == EMU_KIND_SIGNED) {
        return size == 4 ? apply((int32_t*)address, (int32_t)operand, (int32_t)compare)
                         : apply((int64_t*)address, (int64_t)operand, (int64_t)compare);
    }
    return size == 4 ? apply((uint32_t*)address, (uint32_t)operand, (uint32_t)compare)
                     : apply((uint64_t*)address, (uint64_t)operand, (uint64_t)compare);
}

namespace {

// ---- the scheduler of one thread block ---------------------------------------------------------
void fiber_main()
{
    Worker& w = *current_worker;
    w.launch->entry(w.launch->args);
    Fiber& f = w.fibers[w.current];
    set_state(w, f, State::Done);
    switch_context(f.context, w.scheduler);
}

// Sectors of one warp instruction: distinct per instruction, and new to the block.
void count_traffic(Worker& w, const int* group, int n)
{
    uint64_t keys[2 * WARP];
    int count = 0;
    for (int i = 0; i < n; ++i) {
        const Fiber& f = w.fibers[group[i]];
        if (f.region < 0) continue;
        for (uint64_t s = f.address >> 5; s <= (f.address + f.size - 1) >> 5; ++s) {
            keys[count++] = (uint64_t)f.region << 58 | s;
        }
    }
    if (!count) return;
    int access = w.fibers[group[0]].access;
    std::sort(keys, keys + count);
    int last_region = -1;
    for (int i = 0; i < count; ++i) {
        if (i && keys[i] == keys[i - 1]) continue;
        int region = (int)(keys[i] >> 58);
        EmuRegion& r = w.counts[region];
        if (region != last_region) r.requests[access] += 1, last_region = region;
        r.sectors[access] += 1;
        if (w.block_touched.insert(keys[i]).second) r.block_sectors += 1;
    }
}

void raise_deadlock(Worker& w);

void run_block(Worker& w, uint64_t block)
{
    const EmuLaunch& L = *w.launch;
    w.block_idx = uint3{(unsigned)(block % L.grid[0]), (unsigned)(block / L.grid[0] % L.grid[1]),
                        (unsigned)(block / (L.grid[0] * L.grid[1]))};
    ++w.block_serial;
    std::memset(w.warp_generation, 0, sizeof w.warp_generation);
    std::memset(w.ready, 0, sizeof w.ready), std::memset(w.waiting, 0, sizeof w.waiting);
    std::memset(w.exited, 0, sizeof w.exited);
    w.at_barrier = 0;
    std::memset(reinterpret_cast<void*>(w.dynamic_begin), 0xff, L.shared_bytes);
    for (auto [begin, end] : {std::pair{w.tls_begin, w.dynamic_begin},
                              std::pair{w.dynamic_begin + EMU_MAX_DYNAMIC_SHARED, w.tls_end}}) {
        if (end > begin) std::memset(reinterpret_cast<void*>(begin), 0xff, end - begin);
    }
    w.block_touched.clear();
    int n = (int)w.fibers.size();
    for (int i = 0; i < n; ++i) {
        Fiber& f = w.fibers[i];
        char* stack = f.stack;
        f = Fiber{};
        f.stack = stack;
        f.linear = i, f.lane = i % WARP, f.warp = i / WARP;
        f.tid = uint3{(unsigned)(i % L.block[0]), (unsigned)(i / L.block[0] % L.block[1]),
                      (unsigned)(i / (L.block[0] * L.block[1]))};
        make_context(f.context, f.stack, STACK_BYTES, fiber_main);
        w.ready[f.warp] |= 1u << f.lane;
    }
    int n_warps = (n + WARP - 1) / WARP;
    int candidates[32], group[WARP];
    for (;;) {
        if (w.failed || w.shared->failed.load(std::memory_order_relaxed)) {
            w.failed = true;
            return;
        }
        if ((++w.steps & 4095) == 0 && std::chrono::steady_clock::now() > w.shared->deadline) {
            fail(w, 0, 0, "the launch ran past the emulator's time limit of %.0f s (a kernel that spins on memory "
                 "another block never writes, or a grid too large for the emulator)", L.timeout_seconds);
            return;
        }
        int n_candidates = 0;
        for (int warp = 0; warp < n_warps; ++warp) {
            if (w.ready[warp]) candidates[n_candidates++] = warp;
        }
        if (!n_candidates) {
            bool all_done = true;
            for (int warp = 0; warp < n_warps; ++warp) {
                all_done &= w.exited[warp] == (threads_in_warp(w, warp) == WARP ? ~0u
                                                                                 : (1u << threads_in_warp(w, warp)) - 1);
            }
            if (!all_done) raise_deadlock(w);
            return;
        }
        int warp = candidates[w.rng() % n_candidates];
        Fiber* lanes = &w.fibers[warp * WARP];
        // The lanes parked at the lowest address run as one warp instruction; a lane passed over
        // for long runs next (forward progress for spin loops, as independent thread scheduling
        // guarantees).
        uintptr_t pc = UINTPTR_MAX;
        uint64_t longest = 0;
        int starved = -1;
        for (unsigned rest = w.ready[warp]; rest; rest &= rest - 1) {
            int lane = __builtin_ctz(rest);
            pc = std::min(pc, lanes[lane].pc);
            if (lanes[lane].waited > longest) longest = lanes[lane].waited, starved = lane;
        }
        if (longest > 4096) pc = lanes[starved].pc;
        int n_group = 0;
        unsigned group_mask = 0;
        for (unsigned rest = w.ready[warp]; rest; rest &= rest - 1) {
            int lane = __builtin_ctz(rest);
            if (lanes[lane].pc == pc) {
                group[n_group++] = warp * WARP + lane;
                group_mask |= 1u << lane;
                lanes[lane].waited = 0;
            } else {
                lanes[lane].waited += 1;
            }
        }
        if (w.fibers[group[0]].access <= Atomic) count_traffic(w, group, n_group);
        w.warp_instructions += 1;
        w.active_group = group_mask;
        for (int i = 0; i < n_group; ++i) {
            w.current = group[i];
            switch_context(w.scheduler, w.fibers[group[i]].context);
            w.current = -1;
            if (w.failed) return;
        }
    }
}

void raise_deadlock(Worker& w)
{
    // A collective or barrier that waits for a thread that has exited: the same error as when the
    // thread exits first, so that the report does not depend on the order the two happened in.
    for (const Fiber& f : w.fibers) {
        for (const Fiber& g : w.fibers) {
            if (g.state != State::Done) continue;
            if (f.state == State::WaitWarp && g.warp == f.warp && (f.mask >> g.lane & 1)) {
                fail_exited_lane(w, f.op, f.file, f.line, g.lane, f.warp, f.mask);
                return;
            }
            if (f.state == State::WaitBlock) {
                fail_exited_thread(w, f.file, f.line, g.linear);
                return;
            }
        }
    }
    // Otherwise describe every stuck warp collective and barrier, with who is where.
    char text[1024];
    size_t used = 0;
    text[0] = 0;
    for (const Fiber& f : w.fibers) {
        if (f.state != State::WaitWarp && f.state != State::WaitBlock) continue;
        bool first_of_site = true;
        for (const Fiber& g : w.fibers) {
            if (&g == &f) break;
            if (g.state == f.state && g.file == f.file && g.line == f.line && (f.state == State::WaitBlock ||
                                                                              g.warp == f.warp)) {
                first_of_site = false;
                break;
            }
        }
        if (!first_of_site || used >= sizeof text) continue;
        int waiting = 0;
        for (const Fiber& g : w.fibers) {
            waiting += g.state == f.state && g.file == f.file && g.line == f.line &&
                       (f.state == State::WaitBlock || g.warp == f.warp);
        }
        if (f.state == State::WaitWarp) {
            used += snprintf(text + used, sizeof text - used, "%s%d lane(s) of warp %d wait at %s (%s:%d) with mask "
                             "%#x", used ? "; " : "", waiting, f.warp, op_name(f.op), f.file, f.line, f.mask);
        } else {
            used += snprintf(text + used, sizeof text - used, "%s%d thread(s) wait at __syncthreads (%s:%d)",
                             used ? "; " : "", waiting, f.file, f.line);
        }
    }
    fail(w, 0, 0, "block (%u,%u,%u) can make no progress: %s (threads of a warp or block meet at different "
         "collectives, or a lane a collective waits for never reaches it)", w.block_idx.x, w.block_idx.y,
         w.block_idx.z, text);
}

void locate_module(Worker& w)
{
    // The kernel module's thread-local block is the block's shared memory (static arrays and the
    // dynamic buffer); its loaded segments hold what `__device__` variables it defines.
    w.dynamic_begin = reinterpret_cast<uintptr_t>(w.launch->dynamic_shared_base());
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* data) -> int {
            Worker& w = *static_cast<Worker*>(data);
            uintptr_t tls = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
            for (int i = 0; i < info->dlpi_phnum; ++i) {
                const ElfW(Phdr)& p = info->dlpi_phdr[i];
                if (p.p_type == PT_TLS && tls && w.dynamic_begin >= tls && w.dynamic_begin < tls + p.p_memsz) {
                    w.tls_begin = tls, w.tls_end = tls + p.p_memsz;
                    for (int j = 0; j < info->dlpi_phnum; ++j) {
                        const ElfW(Phdr)& q = info->dlpi_phdr[j];
                        if (q.p_type == PT_LOAD) {
                            w.module_data.emplace_back(info->dlpi_addr + q.p_vaddr,
                                                       info->dlpi_addr + q.p_vaddr + q.p_memsz);
                        }
                    }
                    return 1;
                }
            }
            return 0;
        },
        &w);
    w.shared_shadow.resize((w.tls_end - w.tls_begin) / 4 + 1);
}

void run_worker(EmuLaunch* launch, Shared* shared, int index, std::vector<EmuRegion>* counts, uint64_t* instructions)
{
    Worker w;
    w.launch = launch, w.shared = shared;
    w.rng.seed(launch->seed * 1000003 + index);
    w.counts.assign(launch->regions, launch->regions + launch->n_regions);
    for (EmuRegion& r : w.counts) {
        std::fill(std::begin(r.requests), std::end(r.requests), 0);
        std::fill(std::begin(r.sectors), std::end(r.sectors), 0);
        r.block_sectors = 0;
    }
    current_worker = &w;
    locate_module(w);
    uint64_t threads = launch->block[0] * launch->block[1] * launch->block[2];
    w.fibers.resize(threads);
    std::vector<char*> stacks;
    for (Fiber& f : w.fibers) {
        f.stack = static_cast<char*>(mmap(nullptr, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                          -1, 0));
        stacks.push_back(f.stack);
    }
    uint64_t blocks = launch->grid[0] * launch->grid[1] * launch->grid[2];
    for (;;) {
        uint64_t block = shared->next_block.fetch_add(1);
        if (block >= blocks || shared->failed.load()) break;
        run_block(w, block);
        if (w.failed) break;
    }
    for (char* stack : stacks) munmap(stack, STACK_BYTES);
    current_worker = nullptr;
    *counts = std::move(w.counts);
    *instructions = w.warp_instructions;
}

}  // namespace

// Runs the launch to completion: 0, or 1 with launch->error set. Traffic counters are added to
// the regions.
extern "C" int emu_launch(EmuLaunch* launch)
{
    Shared shared;
    shared.deadline = std::chrono::steady_clock::now() +
                      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                          std::chrono::duration<double>(launch->timeout_seconds));
    launch->error[0] = 0;
    launch->error_pc[0] = launch->error_pc[1] = 0;
    uint64_t blocks = launch->grid[0] * launch->grid[1] * launch->grid[2];
    int workers = (int)std::max<uint64_t>(1, std::min<uint64_t>(launch->workers, blocks));
    std::vector<std::vector<EmuRegion>> counts(workers);
    std::vector<uint64_t> instructions(workers);
    std::vector<std::thread> threads;
    for (int i = 0; i < workers; ++i) {
        threads.emplace_back(run_worker, launch, &shared, i, &counts[i], &instructions[i]);
    }
    for (std::thread& t : threads) t.join();
    launch->warp_instructions = 0;
    for (int i = 0; i < workers; ++i) {
        launch->warp_instructions += instructions[i];
        for (int r = 0; r < launch->n_regions; ++r) {
            EmuRegion& total = launch->regions[r];
            const EmuRegion& part = counts[i][r];
            for (int k = 0; k < 3; ++k) total.requests[k] += part.requests[k], total.sectors[k] += part.sectors[k];
            total.block_sectors += part.block_sectors;
        }
    }
    return shared.failed.load() ? 1 : 0;
}
