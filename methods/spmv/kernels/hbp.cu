// HBP SpMV (arXiv 2504.08860; docs/hbp-cuda.md) over the compact HBP layout, the contract in
// methods/spmv/hbp.py: only non-empty 2D blocks are stored, row-block-major then by column block;
// inside a block only rows with nonzeros there get a slot; slots are cut into warp groups of at
// most 32 lanes, numbered longest first, whose nonzeros are interleaved round by round (round t
// holds element t of lanes 0 .. n_t - 1, n_t = the lanes longer than t).
//
// hbp_spmv   y = A @ x in one kernel: no partial sums in memory and no merge kernel.
//
// One warp per row block at a time. The warp sums its row block into a y panel of block_height
// entries in its own slice of shared memory: it zeroes the panel, walks the row block's groups in
// storage order (so each row sums its blocks in column-block order, as the CPU executor does),
// lane q of a group adds its slot's dot product to the panel entry of its row, then the warp
// writes the panel to y once, coalesced (rows without nonzeros get 0). The rows of one group are
// distinct, and a __syncwarp separates consecutive groups, so no atomics are needed and every
// call gives the same bits.
//
// Lane positions come from the lengths: the group's round t holds the n_t lanes longer than t,
// which __ballot_sync counts, so lane q reads element t at (group start + n_0 + ... + n_(t-1) + q).
// Every round is one coalesced read of values and of the 16-bit columns.
//
// x is read through the read-only data cache (__ldg), not staged in shared memory: a block's
// x slice is block_width values, and at the paper's 512 x 4096 a stored block holds far fewer
// nonzeros than its slice has 32-byte sectors (docs/hbp-cuda.md gives the figures), so a tile
// would load more of x than the block reads.
//
// Work allocation (the paper's mixed execution allocation, over row blocks): the launch has
// n_warps = gridDim.x * blockDim.x / 32 warps (blockDim.x a multiple of 32).
//   fixed part:       warp w sums row blocks [w * fixed_per_warp, (w + 1) * fixed_per_warp);
//   competitive part: the row blocks [n_warps * fixed_per_warp, n_rowblocks) form one queue; lane
//                     0 of each warp claims CHUNK consecutive entries with atomicAdd on
//                     *queue_counter and broadcasts the claim with __shfl_sync, until a claim starts
//                     past the end of the queue.
// The host MUST zero *queue_counter before every launch (the authors' counter was drained by the
// warm-up, so their timed launches skipped the competitive part; docs/hbp-cuda.md).
//
// Shared memory is dynamic: (blockDim.x / 32) * block_height * sizeof(VALUE_T) bytes per thread
// block (4 KB per warp at 512 rows in fp64), set by the host.
//
// Compile-time parameters (prepended as #defines by methods/spmv/cuda.py; the defaults let
// .ci/check_kernels.sh compile this file as it is):
//   VALUE_T  double or float: values, x, y and the sums.
//   CHUNK    row blocks per competitive claim.
// Index types as in the layout: int32 block and group pointers, one int64 nonzero offset per
// block, uint32 group offsets relative to their block, uint16 rows, lengths and columns.

#ifndef VALUE_T
#define VALUE_T double
#endif
#ifndef CHUNK
#define CHUNK 1
#endif

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu

// Row block rb summed into y by one warp (all 32 lanes call it with the same rb).
__device__ __forceinline__ void hbp_row_block(const int rb, const int lane, VALUE_T* panel, const int nrows,
                                              const int block_height, const int block_width,
                                              const int* __restrict__ row_block_ptr,
                                              const int* __restrict__ block_col,
                                              const long long* __restrict__ block_nz_ptr,
                                              const int* __restrict__ block_group_ptr,
                                              const int* __restrict__ group_slot_ptr,
                                              const unsigned int* __restrict__ group_nz_offset,
                                              const unsigned short* __restrict__ slot_row,
                                              const unsigned short* __restrict__ slot_last,
                                              const unsigned short* __restrict__ cols,
                                              const VALUE_T* __restrict__ values, const VALUE_T* __restrict__ x,
                                              VALUE_T* __restrict__ y)
{
    const long long row0 = (long long)rb * block_height;
    const int rows = (int)min((long long)block_height, nrows - row0);
    for (int r = lane; r < rows; r += WARP_SIZE) {
        panel[r] = 0;
    }
    __syncwarp();
    int b = row_block_ptr[rb];
    const int end_group = block_group_ptr[row_block_ptr[rb + 1]];
    for (int g = block_group_ptr[b]; g < end_group; ++g) {
        while (block_group_ptr[b + 1] <= g) {  // the block of group g
            ++b;
        }
        const int first_slot = group_slot_ptr[g];
        const int n_lanes = group_slot_ptr[g + 1] - first_slot;
        const int length = lane < n_lanes ? slot_last[first_slot + lane] + 1 : 0;
        const int rounds = __shfl_sync(FULL_MASK, length, 0);  // lane 0 is the longest
        const VALUE_T* __restrict__ xs = x + (long long)block_col[b] * block_width;
        long long k = block_nz_ptr[b] + group_nz_offset[g];
        VALUE_T sum = 0;
        for (int t = 0; t < rounds; ++t) {
            const int active = __popc(__ballot_sync(FULL_MASK, t < length));
            if (lane < active) {
                sum += values[k + lane] * __ldg(xs + cols[k + lane]);
            }
            k += active;
        }
        if (lane < n_lanes) {
            panel[slot_row[first_slot + lane]] += sum;
        }
        __syncwarp();  // the next group may add to a row another lane just added to
    }
    // Each lane writes out the entries it zeroes for the next row block, so no barrier is needed here.
    for (int r = lane; r < rows; r += WARP_SIZE) {
        y[row0 + r] = panel[r];
    }
}

// x and y come last: the executor binds every other argument once and appends them at each call.
extern "C" __global__ void hbp_spmv(const int n_rowblocks, const int fixed_per_warp, const int nrows,
                                    const int block_height, const int block_width,
                                    const int* __restrict__ row_block_ptr, const int* __restrict__ block_col,
                                    const long long* __restrict__ block_nz_ptr,
                                    const int* __restrict__ block_group_ptr, const int* __restrict__ group_slot_ptr,
                                    const unsigned int* __restrict__ group_nz_offset,
                                    const unsigned short* __restrict__ slot_row,
                                    const unsigned short* __restrict__ slot_last,
                                    const unsigned short* __restrict__ cols, const VALUE_T* __restrict__ values,
                                    int* __restrict__ queue_counter, const VALUE_T* __restrict__ x,
                                    VALUE_T* __restrict__ y)
{
    extern __shared__ __align__(16) unsigned char hbp_shared[];
    VALUE_T* panel = reinterpret_cast<VALUE_T*>(hbp_shared) + (threadIdx.x / WARP_SIZE) * block_height;
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    const int n_warps = gridDim.x * (blockDim.x / WARP_SIZE);

    // Fixed part: a contiguous share of the row blocks per warp.
    const int fixed_begin = warp * fixed_per_warp;
    for (int rb = fixed_begin; rb < fixed_begin + fixed_per_warp; ++rb) {
        hbp_row_block(rb, lane, panel, nrows, block_height, block_width, row_block_ptr, block_col, block_nz_ptr,
                      block_group_ptr, group_slot_ptr, group_nz_offset, slot_row, slot_last, cols, values, x, y);
    }

    // Competitive part: chunks of CHUNK queue entries, claimed from the counter the host zeroed.
    const int queue_begin = n_warps * fixed_per_warp;
    const int queue_size = n_rowblocks - queue_begin;
    for (;;) {
        int start = 0;
        if (lane == 0) {
            start = atomicAdd(queue_counter, CHUNK);
        }
        start = __shfl_sync(FULL_MASK, start, 0);
        if (start >= queue_size) {
            break;
        }
        const int end = min(start + CHUNK, queue_size);
        for (int q = start; q < end; ++q) {
            hbp_row_block(queue_begin + q, lane, panel, nrows, block_height, block_width, row_block_ptr, block_col,
                          block_nz_ptr, block_group_ptr, group_slot_ptr, group_nz_offset, slot_row, slot_last, cols,
                          values, x, y);
        }
    }
}
