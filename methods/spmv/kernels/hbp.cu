// HBP SpMV (arXiv 2504.08860, "Mixed Execution Allocation"; hbp.md section 3, basic_spmv and
// basic_combine) over OUR compact layout (the contract in methods/spmv/hbp.py: only non-empty
// 2D blocks are stored, row-block-major; inside a block only rows with nonzeros get a slot;
// slots are cut into warp groups of at most 32 rows whose nonzeros are interleaved round-robin).
//
// hbp_spmv   partial[s] = the in-block dot product of slot s, for every stored block.
// hbp_merge  y[r] = sum of partial over row r's slots (merge_slot[merge_ptr[r]:merge_ptr[r+1]]),
//            0 for a row without slots. A separate kernel, as in the paper: the authors found
//            atomics into y slower than a merge.
//
// Work allocation of hbp_spmv (the paper's mixed allocation, applied to our stored-block list):
//   the launch has n_warps = gridDim.x * blockDim.x / 32 warps (blockDim.x a multiple of 32);
//   fixed part:       warp w processes blocks [w * fixed_per_warp, (w + 1) * fixed_per_warp);
//   competitive part: the blocks [n_warps * fixed_per_warp, n_blocks) form one queue; lane 0 of
//                     each warp claims CHUNK consecutive queue entries with atomicAdd on
//                     *queue_counter and broadcasts the claim with __shfl_sync, until a claim
//                     starts past the end of the queue.
// The host chooses fixed_per_warp (default floor(n_blocks / n_warps), the authors' rule: fixed
// shares as large as fit, the remainder competed for) and MUST zero *queue_counter before every
// launch: the authors' counter was drained by the warm-up, so their timed launches skipped the
// competitive part (hbp.md section 5).
//
// x tile: for each block the warp copies x[col0 : min(col0 + BLOCK_WIDTH, ncols)] (col0 =
// block_col * BLOCK_WIDTH) into its own slice of shared memory (never past the end of x, unlike
// the authors' code) and reads x there. A warp whose next block has the same block column as the
// tile it holds keeps it (with one column block, each warp loads x once).
// Shared memory is dynamic: (blockDim.x / 32) * BLOCK_WIDTH * sizeof(VALUE_T) bytes per thread
// block (32 KB per warp at 4096 fp64), set by the host, which also raises the 48 KB default
// limit where the tile needs more.
//
// Compile-time parameters (prepended as #defines by methods/spmv/cuda.py; the defaults are the
// paper's, so .ci/check_kernels.sh can compile this file as it is):
//   VALUE_T      double or float: values, x, partial, y.
//   BLOCK_WIDTH  columns per 2D block (the layout's block_width).
//   CHUNK        blocks per competitive claim (the authors' SUB_N = 10).
// Index types: int32 everywhere except the int64 offsets into the nonzeros (group_nz_ptr) and
// into merge_slot (merge_ptr), as in the layout contract.

#ifndef VALUE_T
#define VALUE_T double
#endif
#ifndef BLOCK_WIDTH
#define BLOCK_WIDTH 4096
#endif
#ifndef CHUNK
#define CHUNK 10
#endif

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu

// partial[s] for every slot s of stored block b. All 32 lanes of a warp call it with the same b
// and tile_col (warp-uniform control flow), which the __syncwarp calls need.
__device__ __forceinline__ void hbp_block(const int b, const int lane, int& tile_col, VALUE_T* tile,
                                          const int ncols, const int* __restrict__ block_col,
                                          const int* __restrict__ block_group_ptr,
                                          const int* __restrict__ group_slot_ptr,
                                          const long long* __restrict__ group_nz_ptr,
                                          const int* __restrict__ cols, const VALUE_T* __restrict__ values,
                                          const int* __restrict__ next, const VALUE_T* __restrict__ x,
                                          VALUE_T* __restrict__ partial)
{
    const int cb = block_col[b];
    const int col0 = cb * BLOCK_WIDTH;  // <= the largest column index, so it fits an int
    if (cb != tile_col) {
        // No lane may still read the old tile while it is overwritten ...
        __syncwarp();
        const int width = min(BLOCK_WIDTH, ncols - col0);
        for (int i = lane; i < width; i += WARP_SIZE) {
            tile[i] = x[col0 + i];
        }
        // ... and every lane must see the whole new tile before reading it.
        __syncwarp();
        tile_col = cb;
    }
    const int group_end = block_group_ptr[b + 1];
    for (int g = block_group_ptr[b]; g < group_end; ++g) {
        const int first_slot = group_slot_ptr[g];
        // Lane q owns slot q of the group; its row's first nonzero is element q of the group
        // (every row of a group has one), the rest follow the next-offset chain to -1.
        if (lane < group_slot_ptr[g + 1] - first_slot) {
            VALUE_T sum = 0;
            long long k = group_nz_ptr[g] + lane;
            for (;;) {
                sum += values[k] * tile[cols[k] - col0];
                const int step = next[k];
                if (step < 0) {
                    break;
                }
                k += step;
            }
            partial[first_slot + lane] = sum;
        }
    }
}

// x comes last: the executor binds every other argument once and appends x at each call.
extern "C" __global__ void hbp_spmv(const int n_blocks, const int fixed_per_warp, const int ncols,
                                    const int* __restrict__ block_col, const int* __restrict__ block_group_ptr,
                                    const int* __restrict__ group_slot_ptr,
                                    const long long* __restrict__ group_nz_ptr, const int* __restrict__ cols,
                                    const VALUE_T* __restrict__ values, const int* __restrict__ next,
                                    int* __restrict__ queue_counter, VALUE_T* __restrict__ partial,
                                    const VALUE_T* __restrict__ x)
{
    extern __shared__ __align__(16) unsigned char hbp_shared[];
    VALUE_T* tile = reinterpret_cast<VALUE_T*>(hbp_shared) + (threadIdx.x / WARP_SIZE) * BLOCK_WIDTH;
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    const int n_warps = gridDim.x * (blockDim.x / WARP_SIZE);
    int tile_col = -1;

    // Fixed part: a contiguous share of the stored blocks per warp.
    const int fixed_begin = warp * fixed_per_warp;
    for (int b = fixed_begin; b < fixed_begin + fixed_per_warp; ++b) {
        hbp_block(b, lane, tile_col, tile, ncols, block_col, block_group_ptr, group_slot_ptr, group_nz_ptr,
                  cols, values, next, x, partial);
    }

    // Competitive part: chunks of CHUNK queue entries, claimed from the counter the host zeroed.
    const int queue_begin = n_warps * fixed_per_warp;
    const int queue_size = n_blocks - queue_begin;
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
            hbp_block(queue_begin + q, lane, tile_col, tile, ncols, block_col, block_group_ptr, group_slot_ptr,
                      group_nz_ptr, cols, values, next, x, partial);
        }
    }
}

// y[r] = sum over r's slots of partial, in merge_slot order (column-block order); 0 without slots.
extern "C" __global__ void hbp_merge(const int nrows, const long long* __restrict__ merge_ptr,
                                     const int* __restrict__ merge_slot, const VALUE_T* __restrict__ partial,
                                     VALUE_T* __restrict__ y)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x; row < nrows; row += stride) {
        VALUE_T sum = 0;
        for (long long k = merge_ptr[row]; k < merge_ptr[row + 1]; ++k) {
            sum += partial[merge_slot[k]];
        }
        y[row] = sum;
    }
}
