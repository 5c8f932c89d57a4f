// CSR sparse matrix-vector product y = A x: the baselines of the HBP paper (arXiv 2504.08860).
//
// csr_scalar: one thread per row, the paper's "CSR format" baseline (the authors' csr_spmv.cu,
//             docs/papers/hbp.md). Launched at 256 x 32 threads it is the authors' setup.
// csr_vector: one warp per row, lanes stride over the row, shuffle reduction: the usual
//             stronger hand-written CSR kernel.
//
// Types (the loader in methods/spmv/cuda.py prepends the #defines; the defaults below let
// .ci/check_kernels.sh compile this file as it is):
//   VALUE_T  double or float: values, x and y.
//   columns  int32 (as scipy and cupyx store CSR indices).
//   row_ptr  int64, so nnz > 2^31 works; the executor widens cupyx's int32 indptr once, at
//            construction (nrows + 1 entries, 4 more bytes per row of traffic).
// Both kernels stride over rows by the whole grid, so any launch (the authors' 256 blocks of
// 32 threads, or one thread / one warp per row) is correct.

#ifndef VALUE_T
#define VALUE_T double
#endif

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu

// y[row] = sum_k values[k] * x[cols[k]] over k in [row_ptr[row], row_ptr[row + 1]), summed in
// storage (column) order, like scipy.
extern "C" __global__ void csr_scalar(const int nrows, const long long* __restrict__ row_ptr,
                                      const int* __restrict__ cols, const VALUE_T* __restrict__ values,
                                      const VALUE_T* __restrict__ x, VALUE_T* __restrict__ y)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x; row < nrows; row += stride) {
        VALUE_T sum = 0;
        for (long long k = row_ptr[row]; k < row_ptr[row + 1]; ++k) {
            sum += values[k] * x[cols[k]];
        }
        y[row] = sum;
    }
}

// One warp per row: lane q sums elements q, q + 32, ... of the row, then a shuffle-down tree
// adds the 32 lane sums into lane 0. blockDim.x must be a multiple of 32
// (the executor checks), so every warp is full and the row loop is warp-uniform, which the
// full-mask shuffle needs.
extern "C" __global__ void csr_vector(const int nrows, const long long* __restrict__ row_ptr,
                                      const int* __restrict__ cols, const VALUE_T* __restrict__ values,
                                      const VALUE_T* __restrict__ x, VALUE_T* __restrict__ y)
{
    const int lane = threadIdx.x % WARP_SIZE;
    const long long n_warps = (long long)gridDim.x * (blockDim.x / WARP_SIZE);
    const long long first_warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    for (long long row = first_warp; row < nrows; row += n_warps) {
        VALUE_T sum = 0;
        for (long long k = row_ptr[row] + lane; k < row_ptr[row + 1]; k += WARP_SIZE) {
            sum += values[k] * x[cols[k]];
        }
        for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
            sum += __shfl_down_sync(FULL_MASK, sum, offset);
        }
        if (lane == 0) {
            y[row] = sum;
        }
    }
}
