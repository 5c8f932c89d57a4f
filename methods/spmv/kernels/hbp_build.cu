// HBP preprocessing on the GPU (arXiv 2504.08860; docs/hbp-cuda.md): the compact layout of
// methods/spmv/hbp.py built from CSR, bitwise equal to the CPU build for the same block shape
// and ordering (hash or sort; methods/spmv/hbp_build_cuda.py launches these kernels in order).
//
// hbp_count     one warp per row block: the slots (row segments of one column block) of each
//               column block, counted in shared memory; writes the row block's slots, stored
//               blocks and groups (runs of 32 per block).
// hbp_segments  one warp per row block: counts again, gives every stored block its column, its
//               first nonzero, group and slot (a scan over the column blocks in order), then
//               reads the rows in order and records each segment (row, first CSR position,
//               length) at the next slot of its block: every block's slots in row order, as
//               the CPU build lists them before ordering.
// hbp_dp_cut    (the DP only) one thread per stored block: the stable sort by length, then the
//               optimal group cuts (methods/spmv/ordering.py: mark_optimal_groups); writes the
//               order, the cuts and the block's number of groups.
// hbp_emit      one warp per stored block: lane 0 orders the block's slots (the hash
//               placement, or a stable sort by length; the DP's order and cuts are read), then
//               the warp writes each group (32 slots, or the DP's cut): lanes numbered longest
//               first, nonzeros interleaved round by round.
//
// A warp walks a row 32 nonzeros at a time; a lane whose nonzero starts a segment (first of its
// row, or another column block than the one before) handles the segment. A row's segments lie
// in distinct column blocks, so lanes never update the same counter at once, and a __syncwarp
// after each chunk orders one row's updates before the next's.
//
// Compile-time parameters (prepended as #defines by the host; the defaults let
// .ci/check_kernels.sh compile this file as it is):
//   VALUE_T   double or float.
//   ORDERING  0: the paper's hash placement; 1: a stable sort by in-block count; 2: that sort, then
//             the DP's group cuts (hbp_dp_cut, before hbp_emit).

#ifndef VALUE_T
#define VALUE_T double
#endif
#ifndef ORDERING
#define ORDERING 0
#endif

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu
#define GROUP_OVERHEAD 32  // the DP's cost of one group, in padded nonzeros (methods/spmv/ordering.py)
#define COUNT_SHIFT 4  // counts with the same count >> 4 share a home slot (methods/spmv/ordering.py)
#define HOME_SHIFT 8   // homes are multiples of 256: h = (count >> 4) << 8

// Calls visit(row, k, colblock, stop) for every segment [k, stop) of the rows [row0, row_end), the
// lane owning k making the call; rows in order, chunks of 32 nonzeros separated by __syncwarp.
template <typename Visit>
__device__ __forceinline__ void for_each_segment(const int row0, const int row_end, const int lane, const int width,
                                                 const long long* __restrict__ indptr,
                                                 const int* __restrict__ indices, Visit visit)
{
    for (int row = row0; row < row_end; ++row) {
        const long long start = indptr[row];
        const long long end = indptr[row + 1];
        for (long long base = start; base < end; base += WARP_SIZE) {
            const long long k = base + lane;
            if (k < end) {
                const int colblock = indices[k] / width;
                if (k == start || indices[k - 1] / width != colblock) {
                    long long stop = k + 1;
                    while (stop < end && indices[stop] / width == colblock) {
                        ++stop;
                    }
                    visit(row, k, colblock, stop);
                }
            }
            __syncwarp();
        }
    }
}

// Zeroes slots (and nonzeros, unless null) per column block, then counts each column block's
// segments (and their nonzeros) in the rows [row0, row_end).
__device__ __forceinline__ void count_segments(const int row0, const int row_end, const int lane, const int width,
                                               const int n_colblocks, const long long* __restrict__ indptr,
                                               const int* __restrict__ indices, int* slots, int* nonzeros)
{
    for (int c = lane; c < n_colblocks; c += WARP_SIZE) {
        slots[c] = 0;
        if (nonzeros != nullptr) {
            nonzeros[c] = 0;
        }
    }
    __syncwarp();
    for_each_segment(row0, row_end, lane, width, indptr, indices, [&](int, long long k, int colblock, long long stop) {
        slots[colblock] += 1;
        if (nonzeros != nullptr) {
            nonzeros[colblock] += (int)(stop - k);
        }
    });
}

// Per row block: its slots, stored blocks and groups (runs of 32 per block).
extern "C" __global__ void hbp_count(const int nrows, const int height, const int width, const int n_colblocks,
                                     const long long* __restrict__ indptr, const int* __restrict__ indices,
                                     long long* __restrict__ rb_slots, long long* __restrict__ rb_blocks,
                                     long long* __restrict__ rb_groups)
{
    extern __shared__ __align__(16) unsigned char build_shared[];
    int* slots = reinterpret_cast<int*>(build_shared);  // per column block
    const int lane = threadIdx.x;
    const int rb = blockIdx.x;
    const int row0 = rb * height;
    count_segments(row0, min(row0 + height, nrows), lane, width, n_colblocks, indptr, indices, slots, nullptr);
    long long n_slots = 0, n_blocks = 0, n_groups = 0;
    for (int c = lane; c < n_colblocks; c += WARP_SIZE) {
        n_slots += slots[c];
        n_blocks += slots[c] > 0;
        n_groups += (slots[c] + WARP_SIZE - 1) / WARP_SIZE;
    }
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        n_slots += __shfl_down_sync(FULL_MASK, n_slots, offset);
        n_blocks += __shfl_down_sync(FULL_MASK, n_blocks, offset);
        n_groups += __shfl_down_sync(FULL_MASK, n_groups, offset);
    }
    if (lane == 0) {
        rb_slots[rb] = n_slots;
        rb_blocks[rb] = n_blocks;
        rb_groups[rb] = n_groups;
    }
}

// Exclusive prefix sum of value over the warp's lanes, plus carry; returns it and adds the total to carry.
__device__ __forceinline__ long long warp_exclusive_scan(const long long value, const int lane, long long& carry)
{
    long long inclusive = value;
    for (int offset = 1; offset < WARP_SIZE; offset *= 2) {
        const long long other = __shfl_up_sync(FULL_MASK, inclusive, offset);
        if (lane >= offset) {
            inclusive += other;
        }
    }
    const long long result = carry + inclusive - value;
    carry += __shfl_sync(FULL_MASK, inclusive, WARP_SIZE - 1);
    return result;
}

// Per row block: the stored blocks' arrays, and every segment recorded at its block's next slot.
extern "C" __global__ void hbp_segments(const int nrows, const int height, const int width, const int n_colblocks,
                                        const long long* __restrict__ indptr, const int* __restrict__ indices,
                                        const long long* __restrict__ slot_offsets,
                                        const long long* __restrict__ block_offsets,
                                        const long long* __restrict__ group_offsets, int* __restrict__ block_col,
                                        long long* __restrict__ block_nz_ptr, int* __restrict__ block_group_ptr,
                                        long long* __restrict__ block_slot, unsigned short* __restrict__ seg_row,
                                        long long* __restrict__ seg_start, int* __restrict__ seg_len)
{
    extern __shared__ __align__(16) unsigned char build_shared[];
    int* slots = reinterpret_cast<int*>(build_shared);  // per column block: slots, then the next slot
    int* nonzeros = slots + n_colblocks;                 // per column block
    const int lane = threadIdx.x;
    const int rb = blockIdx.x;
    const int row0 = rb * height;
    const int row_end = min(row0 + height, nrows);
    count_segments(row0, row_end, lane, width, n_colblocks, indptr, indices, slots, nonzeros);
    // The stored blocks in column order: a scan over the column blocks, 32 at a time.
    long long block_carry = 0, slot_carry = 0, nz_carry = 0, group_carry = 0;
    for (int base = 0; base < n_colblocks; base += WARP_SIZE) {
        const int c = base + lane;
        const int m = c < n_colblocks ? slots[c] : 0;
        const int nnz = c < n_colblocks ? nonzeros[c] : 0;
        const long long j = warp_exclusive_scan(m > 0, lane, block_carry);
        const long long first_slot = warp_exclusive_scan(m, lane, slot_carry);
        const long long first_nz = warp_exclusive_scan(nnz, lane, nz_carry);
        const long long first_group = warp_exclusive_scan((m + WARP_SIZE - 1) / WARP_SIZE, lane, group_carry);
        if (m > 0) {
            const long long block = block_offsets[rb] + j;
            block_col[block] = c;
            block_nz_ptr[block] = indptr[row0] + first_nz;
            block_group_ptr[block] = (int)(group_offsets[rb] + first_group);
            block_slot[block] = slot_offsets[rb] + first_slot;
            slots[c] = (int)first_slot;  // now the block's next slot, relative to the row block's first
        }
    }
    __syncwarp();
    const long long slot0 = slot_offsets[rb];
    for_each_segment(row0, row_end, lane, width, indptr, indices,
                     [&](int row, long long k, int colblock, long long stop) {
        const long long slot = slot0 + slots[colblock];
        slots[colblock] += 1;
        seg_row[slot] = (unsigned short)(row - row0);
        seg_start[slot] = k;
        seg_len[slot] = (int)(stop - k);
    });
}

// The nearest free slot at or right of slot (table_size if none): path halving over occupied slots.
__device__ int free_at_or_right(int* free_right, int slot)
{
    while (free_right[slot] != slot) {
        free_right[slot] = free_right[free_right[slot]];
        slot = free_right[slot];
    }
    return slot;
}

// The nearest free slot at or left of slot (-1 if none); free_left is shifted by one.
__device__ int free_at_or_left(int* free_left, int slot)
{
    int node = slot + 1;
    while (free_left[node] != node) {
        free_left[node] = free_left[free_left[node]];
        node = free_left[node];
    }
    return node - 1;
}

// order[0..m): the slots of one block (their lengths len[0..m), rows in order) in the ordering's
// order. One thread; scratch holds 3 * table_size + 2 ints.
__device__ void order_block(const int* __restrict__ len, const int m, const int table_size, int* order, int* scratch)
{
    int longest = 0;
    int shortest = m > 0 ? len[0] : 0;
    for (int i = 0; i < m; ++i) {
        longest = max(longest, len[i]);
        shortest = min(shortest, len[i]);
    }
    // Counts below 16 all hash to slot 0, where the probing gives row i slot i; equal counts sort stably.
    if (ORDERING == 0 ? (longest >> COUNT_SHIFT) == 0 : shortest == longest) {
        for (int i = 0; i < m; ++i) {
            order[i] = i;
        }
        return;
    }
    if (ORDERING != 0) {  // stable sort by length: a bottom-up merge sort through the scratch
        int* from = order;
        int* to = scratch;
        for (int i = 0; i < m; ++i) {
            from[i] = i;
        }
        for (int width = 1; width < m; width *= 2) {
            for (int lo = 0; lo < m; lo += 2 * width) {
                const int mid = min(lo + width, m);
                const int hi = min(lo + 2 * width, m);
                int a = lo, b = mid, out = lo;
                while (a < mid && b < hi) {
                    to[out++] = len[from[b]] < len[from[a]] ? from[b++] : from[a++];
                }
                while (a < mid) {
                    to[out++] = from[a++];
                }
                while (b < hi) {
                    to[out++] = from[b++];
                }
            }
            int* swap = from;
            from = to;
            to = swap;
        }
        if (from != order) {
            for (int i = 0; i < m; ++i) {
                order[i] = from[i];
            }
        }
        return;
    }
    // The hash: row i with count c goes to the free slot nearest h = (c >> 4) << 8, the right one
    // on a tie (h + d is probed before h - d), or to the last free slot if h is past the table.
    int* table = scratch;                    // table_size entries, -1 when free
    int* free_right = table + table_size;    // table_size + 1
    int* free_left = free_right + table_size + 1;
    for (int s = 0; s <= table_size; ++s) {
        if (s < table_size) {
            table[s] = -1;
        }
        free_right[s] = s;
        free_left[s] = s;
    }
    for (int row = 0; row < m; ++row) {
        const int home = (len[row] >> COUNT_SHIFT) << HOME_SHIFT;
        int slot;
        if (home >= table_size) {
            slot = free_at_or_left(free_left, table_size - 1);
        } else {
            const int right = free_at_or_right(free_right, home);
            const int left = free_at_or_left(free_left, home);
            slot = right < table_size && (left < 0 || right - home <= home - left) ? right : left;
        }
        table[slot] = row;
        free_right[slot] = slot + 1;
        free_left[slot + 1] = slot;
    }
    int position = 0;
    for (int s = 0; s < table_size; ++s) {
        if (table[s] >= 0) {
            order[position++] = table[s];
        }
    }
}

// The DP's cuts of one block's slots, sorted by length (order): start[i] = 1 where a group begins.
// cost[end] is the least padded work of the first end slots, choice[end] the size of its last
// group; ties keep the smaller candidate found first, as the CPU's loop does. Returns the groups.
__device__ int dp_cut(const int* __restrict__ len, const int* __restrict__ order, const int m, long long* cost,
                      int* choice, unsigned char* start)
{
    cost[0] = 0;
    for (int end = 1; end <= m; ++end) {
        const long long longest = len[order[end - 1]];
        int best_size = 1;
        long long best = cost[end - 1] + longest + GROUP_OVERHEAD;
        for (int size = min(WARP_SIZE, end); size > 1; --size) {
            const long long candidate = cost[end - size] + size * longest + GROUP_OVERHEAD;
            if (candidate < best) {
                best = candidate;
                best_size = size;
            }
        }
        cost[end] = best;
        choice[end] = best_size;
    }
    for (int i = 0; i < m; ++i) {
        start[i] = 0;
    }
    int groups = 0;
    for (int end = m; end > 0; ++groups) {
        end -= choice[end];
        start[end] = 1;
    }
    return groups;
}

// Per stored block (the DP): its slots' order and group cuts, and its number of groups.
extern "C" __global__ void hbp_dp_cut(const int n_blocks, const int height, const long long* __restrict__ block_slot,
                                      const int* __restrict__ seg_len, int* __restrict__ dp_order,
                                      unsigned char* __restrict__ dp_start, long long* __restrict__ block_groups)
{
    extern __shared__ __align__(16) unsigned char build_shared[];
    long long* cost = reinterpret_cast<long long*>(build_shared);  // height + 1 entries
    int* choice = reinterpret_cast<int*>(cost + height + 1);        // height + 1 entries
    int* scratch = choice + height + 1;                              // 3 * height + 2 entries
    const int b = blockIdx.x;
    const long long first = block_slot[b];
    const int m = (int)(block_slot[b + 1] - first);
    order_block(seg_len + first, m, height, dp_order + first, scratch);
    block_groups[b] = dp_cut(seg_len + first, dp_order + first, m, cost, choice, dp_start + first);
}

// Per stored block: order its slots, then write each group.
extern "C" __global__ void hbp_emit(const int n_blocks, const int height, const int width,
                                    const int* __restrict__ block_col, const long long* __restrict__ block_nz_ptr,
                                    const int* __restrict__ block_group_ptr, const long long* __restrict__ block_slot,
                                    const unsigned short* __restrict__ seg_row,
                                    const long long* __restrict__ seg_start, const int* __restrict__ seg_len,
                                    const int* __restrict__ indices, const VALUE_T* __restrict__ data,
                                    const int* __restrict__ dp_order, const unsigned char* __restrict__ dp_start,
                                    int* __restrict__ group_slot_ptr, unsigned int* __restrict__ group_nz_offset,
                                    unsigned short* __restrict__ slot_row, unsigned short* __restrict__ slot_last,
                                    unsigned short* __restrict__ cols, VALUE_T* __restrict__ values)
{
    extern __shared__ __align__(16) unsigned char build_shared[];
    int* order = reinterpret_cast<int*>(build_shared);  // height entries
    int* scratch = order + height;                       // 3 * height + 2 entries
    const int lane = threadIdx.x;
    const int b = blockIdx.x;
    const long long first = block_slot[b];
    const int m = (int)(block_slot[b + 1] - first);
    const int* ordered = ORDERING == 2 ? dp_order + first : order;
    if (ORDERING != 2 && lane == 0) {
        order_block(seg_len + first, m, height, order, scratch);
    }
    __syncwarp();
    const long long col0 = (long long)block_col[b] * width;
    long long nz = block_nz_ptr[b];
    int group = block_group_ptr[b];
    for (int g0 = 0, n_lanes = 0; g0 < m; g0 += n_lanes, ++group) {
        n_lanes = min(WARP_SIZE, m - g0);
        if (ORDERING == 2) {  // the group ends where the DP starts the next one, lane l marking slot g0 + l
            const unsigned cuts = __ballot_sync(FULL_MASK, lane > 0 && lane < n_lanes && dp_start[first + g0 + lane]);
            n_lanes = cuts ? __ffs(cuts) - 1 : n_lanes;
        }
        const long long slot = first + g0;
        const int s = lane < n_lanes ? ordered[g0 + lane] : 0;
        const int len = lane < n_lanes ? seg_len[first + s] : 0;
        // Lane number: the lanes longer than this one, then the equal ones before it (stable).
        int rank = 0;
        for (int p = 0; p < WARP_SIZE; ++p) {
            const int other = __shfl_sync(FULL_MASK, len, p);
            rank += p < n_lanes && (other > len || (other == len && p < lane));
        }
        if (lane == 0) {
            group_slot_ptr[group] = (int)slot;
            group_nz_offset[group] = (unsigned int)(nz - block_nz_ptr[b]);
        }
        if (lane < n_lanes) {
            slot_row[slot + rank] = seg_row[first + s];
            slot_last[slot + rank] = (unsigned short)(len - 1);
        }
        int longest = len;
        for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
            longest = max(longest, __shfl_xor_sync(FULL_MASK, longest, offset));
        }
        const long long source = lane < n_lanes ? seg_start[first + s] : 0;
        for (int t = 0; t < longest; ++t) {
            const int active = __popc(__ballot_sync(FULL_MASK, t < len));
            if (t < len) {
                cols[nz + rank] = (unsigned short)(indices[source + t] - col0);
                values[nz + rank] = data[source + t];
            }
            nz += active;
        }
    }
}
