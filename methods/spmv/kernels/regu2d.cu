// Regu2D-style SpMV y = A x (Fei and Zhang, ICPP '21; the layout in methods/spmv/regu2d.py):
// row panels of panel_height rows, cut into stored 2D blocks of block_width columns; inside a
// block, rows sorted by in-block count and cut by the optimal-grouping DP into slices of at most
// 32 rows, each stored as a dense column-major k x L block (sliced ELL): step t of lane i is at
// slice_nz_ptr[s] + t * k + i. Columns are 16-bit (or 32-bit) offsets from the block's first
// column, slot rows 16-bit offsets from the panel's first row.
//
// regu2d_spmv  One thread block per row panel (grid-stride over panels). The panel's y lives in
//              shared memory; for each stored block in column-block order, warp w takes the
//              block's slices w, w + n_warps, ...; lane i of a slice sums its row's own entries
//              (it stops at slot_len, so padding is never read) and adds the sum to its row's
//              y entry. A row has at most one slot per block, so no two lanes add to one entry
//              within a block; __syncthreads between blocks orders the additions of different
//              blocks. Each row is therefore summed in the same order as on the CPU (block by
//              block, each in column order), without atomics and without a merge kernel.
//              Slices are at most 32 rows (one warp; the executor checks); slices of fewer rows
//              leave lanes idle, so build the layout with slice_height 32 for the GPU.
//
// Compile-time parameters (prepended as #defines by methods/spmv/cuda.py; the defaults let
// .ci/check_kernels.sh compile this file as it is):
//   VALUE_T  double or float: values, x and y.
//   COL_T    unsigned short (block_width <= 65536) or int: the column offsets.
// Dynamic shared memory: panel_height * sizeof(VALUE_T) bytes per thread block (set by the host).

#ifndef VALUE_T
#define VALUE_T double
#endif
#ifndef COL_T
#define COL_T unsigned short
#endif

#define WARP_SIZE 32

// x and y come last: the executor binds every other argument once and appends them at each call.
extern "C" __global__ void regu2d_spmv(const int n_panels, const int panel_height, const int nrows,
                                       const int block_width, const int* __restrict__ panel_block_ptr,
                                       const int* __restrict__ block_col, const int* __restrict__ block_slice_ptr,
                                       const int* __restrict__ slice_slot_ptr,
                                       const long long* __restrict__ slice_nz_ptr,
                                       const unsigned short* __restrict__ slot_row,
                                       const int* __restrict__ slot_len, const COL_T* __restrict__ cols,
                                       const VALUE_T* __restrict__ values, const VALUE_T* __restrict__ x,
                                       VALUE_T* __restrict__ y)
{
    extern __shared__ __align__(16) unsigned char regu2d_shared[];
    VALUE_T* y_panel = reinterpret_cast<VALUE_T*>(regu2d_shared);
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int n_warps = blockDim.x / WARP_SIZE;

    for (int panel = blockIdx.x; panel < n_panels; panel += gridDim.x) {
        const int row0 = panel * panel_height;  // < nrows, so it fits an int
        const int height = min(panel_height, nrows - row0);
        for (int i = threadIdx.x; i < height; i += blockDim.x) {
            y_panel[i] = 0;
        }
        __syncthreads();
        for (int b = panel_block_ptr[panel]; b < panel_block_ptr[panel + 1]; ++b) {
            const VALUE_T* x_block = x + (long long)block_col[b] * block_width;
            const int slice_end = block_slice_ptr[b + 1];
            for (int s = block_slice_ptr[b] + warp; s < slice_end; s += n_warps) {
                const int first_slot = slice_slot_ptr[s];
                const int k = slice_slot_ptr[s + 1] - first_slot;
                if (lane < k) {
                    const int length = slot_len[first_slot + lane];
                    const VALUE_T* slice_values = values + slice_nz_ptr[s] + lane;
                    const COL_T* slice_cols = cols + slice_nz_ptr[s] + lane;
                    VALUE_T sum = 0;
                    for (long long t = 0; t < length; ++t) {
                        sum += slice_values[t * k] * x_block[slice_cols[t * k]];
                    }
                    y_panel[slot_row[first_slot + lane]] += sum;
                }
            }
            __syncthreads();
        }
        for (int i = threadIdx.x; i < height; i += blockDim.x) {
            y[row0 + i] = y_panel[i];
        }
        // The next panel zeroes y_panel only after every thread has written this one out.
        __syncthreads();
    }
}
