"""HBP preprocessing on a CUDA device: the compact layout of :mod:`methods.spmv.hbp`, built by the
kernels of ``kernels/hbp_build.cu`` on a GPU (or the emulated device), bitwise equal to the CPU
build for the same block shape and ordering.

Launches of one warp per row block or per stored block (the kernel file's header says what each
does): ``hbp_count`` (each row block's slots, blocks and groups), the offsets between row blocks
(prefix sums of three numbers per row block, on the host), ``hbp_segments`` (the stored blocks'
arrays and every block's segments in row order), for the DP ``hbp_dp_cut`` (each block's order
and group cuts, then the blocks' group offsets on the host), and ``hbp_emit`` (each block
ordered by one lane, its groups written by the warp). Every ordering differs only in the lines
of ``order_block`` (and the DP's cuts), as on the CPU.
"""

from __future__ import annotations

import time

import numpy as np

from methods.spmv.cuda_backends import backend as make_backend
from methods.spmv.cuda_kernels import WARP_SIZE, pack_arguments, value_type
from methods.spmv.hbp import GPU_BLOCK_SHAPE, ORDERINGS, HBPMatrix, checked_input
from methods.spmv.partition import INT32_LIMIT, offsets


def build_hbp_cuda(csr, ordering: str = "hash", block_height: int = GPU_BLOCK_SHAPE[0],
                   block_width: int = GPU_BLOCK_SHAPE[1], dtype=None,
                   device: str = "cuda") -> tuple[HBPMatrix, dict[str, float]]:
    """Build the HBP layout of ``csr`` on a CUDA device; arguments as :func:`methods.spmv.hbp.build_hbp`.

    Parameters
    ----------
    ordering : {"hash", "sort", "dp"}
    device : {"cuda", "cuda-emu"}

    Returns
    -------
    hbp : HBPMatrix
        Host arrays, equal to ``build_hbp(csr, ordering, block_height, block_width, dtype)``'s.
    seconds : dict of str to float
        ``"count"`` (the first launch and the offsets), ``"build"`` (the other launches) and
        ``"total"``, each synchronised; uploads and downloads are not timed. On the emulated
        device the times say nothing of a GPU's.

    Raises
    ------
    ValueError
        For an unknown ordering, a block side outside 1..65536, or a matrix whose column blocks
        or block height need more shared memory per warp than the device has.
    """
    indptr, indices, data, shape, (height, width) = checked_input(csr, ordering, block_height, block_width, dtype)
    nrows, ncols = shape
    n_rowblocks, n_colblocks = -(-nrows // height), -(-ncols // width)
    nnz = int(indptr[-1])
    xp = make_backend(device)
    defines = {"VALUE_T": value_type(data.dtype), "ORDERING": ORDERINGS.index(ordering)}
    with xp.device():
        kernels = {name: xp.kernel("hbp_build", defines, name)
                   for name in ("hbp_count", "hbp_segments", "hbp_dp_cut", "hbp_emit")}
        shared = {"hbp_count": 4 * n_colblocks, "hbp_segments": 8 * n_colblocks, "hbp_emit": 4 * (4 * height + 2),
                  "hbp_dp_cut": 12 * (height + 1) + 4 * (3 * height + 2)}
        for name, nbytes in shared.items():
            what = (f"{n_colblocks} column blocks' counters" if name != "hbp_emit"
                    else f"the ordering of a {height}-row block")
            xp.allow_shared(kernels[name], nbytes, what)
        d_indptr, d_indices = xp.asarray(indptr.astype(np.int64)), xp.asarray(indices)
        d_data = xp.asarray(data)
        rb = {name: xp.zeros(max(n_rowblocks, 1), np.int64) for name in ("rb_slots", "rb_blocks", "rb_groups")}
        scalars = {"nrows": nrows, "height": height, "width": width, "n_colblocks": n_colblocks,
                   "indptr": d_indptr, "indices": d_indices}
        start = time.perf_counter()
        if n_rowblocks:
            kernels["hbp_count"]((n_rowblocks,), (WARP_SIZE,), pack_arguments("hbp_count", {**scalars, **rb},
                                                                                 data.dtype),
                                 shared_mem=shared["hbp_count"])
        slot_offsets, block_offsets, group_offsets = (offsets(xp.asnumpy(rb[name])[:n_rowblocks])
                                                      for name in ("rb_slots", "rb_blocks", "rb_groups"))
        n_slots, n_blocks, n_groups = int(slot_offsets[-1]), int(block_offsets[-1]), int(group_offsets[-1])
        if n_slots > INT32_LIMIT:
            raise ValueError(f"{n_slots} slots: HBP numbers slots in int32")
        seconds = {"count": time.perf_counter() - start}
        start = time.perf_counter()
        blocks = {"block_col": xp.empty(n_blocks, np.int32), "block_nz_ptr": xp.empty(n_blocks + 1, np.int64),
                  "block_group_ptr": xp.empty(n_blocks + 1, np.int32),
                  "block_slot": xp.empty(n_blocks + 1, np.int64)}
        segments = {"seg_row": xp.empty(n_slots, np.uint16), "seg_start": xp.empty(n_slots, np.int64),
                    "seg_len": xp.empty(n_slots, np.int32)}
        if n_rowblocks:
            kernels["hbp_segments"]((n_rowblocks,), (WARP_SIZE,), pack_arguments("hbp_segments", {
                **scalars, "slot_offsets": xp.asarray(slot_offsets), "block_offsets": xp.asarray(block_offsets),
                "group_offsets": xp.asarray(group_offsets), **blocks, **segments}, data.dtype),
                shared_mem=shared["hbp_segments"])
        blocks["block_nz_ptr"][n_blocks] = nnz
        blocks["block_slot"][n_blocks] = n_slots
        cuts = {"dp_order": xp.empty(n_slots if ordering == "dp" else 0, np.int32),
                "dp_start": xp.empty(n_slots if ordering == "dp" else 0, np.uint8)}
        if ordering == "dp" and n_blocks:
            block_groups = xp.empty(n_blocks, np.int64)
            kernels["hbp_dp_cut"]((n_blocks,), (1,), pack_arguments("hbp_dp_cut", {
                "n_blocks": n_blocks, "height": height, "block_slot": blocks["block_slot"],
                "seg_len": segments["seg_len"], **cuts, "block_groups": block_groups}, data.dtype),
                shared_mem=shared["hbp_dp_cut"])
            group_ptr = offsets(xp.asnumpy(block_groups))
            n_groups = int(group_ptr[-1])
            blocks["block_group_ptr"] = xp.asarray(group_ptr.astype(np.int32))
        blocks["block_group_ptr"][n_blocks] = n_groups
        out = {"group_slot_ptr": xp.empty(n_groups + 1, np.int32), "group_nz_offset": xp.empty(n_groups, np.uint32),
               "slot_row": xp.empty(n_slots, np.uint16), "slot_last": xp.empty(n_slots, np.uint16),
               "cols": xp.empty(nnz, np.uint16), "values": xp.empty(nnz, data.dtype)}
        if n_blocks:
            kernels["hbp_emit"]((n_blocks,), (WARP_SIZE,), pack_arguments("hbp_emit", {
                "n_blocks": n_blocks, "height": height, "width": width, **blocks, **segments,
                "indices": d_indices, "data": d_data, **cuts, **out}, data.dtype), shared_mem=shared["hbp_emit"])
        out["group_slot_ptr"][n_groups] = n_slots
        xp.synchronize()
        seconds["build"] = time.perf_counter() - start
        seconds["total"] = seconds["count"] + seconds["build"]
        arrays = {name: xp.asnumpy(array) for name, array in {**blocks, **out}.items() if name != "block_slot"}
    hbp = HBPMatrix(row_block_ptr=block_offsets.astype(np.int32), **arrays, shape=shape, block_height=height,
                    block_width=width, ordering=ordering)
    return hbp, seconds
