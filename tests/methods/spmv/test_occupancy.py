"""The CUDA occupancy formula of methods/spmv/occupancy.py, on launches worked out by hand."""

import pytest

from methods.spmv.occupancy import ARCHITECTURES, occupancy


@pytest.mark.parametrize(("arch", "threads", "registers", "shared", "blocks", "warps", "limiter"), [
    # 32 regs: 1024 per warp, 64 warps by registers; 8 warps per block: 8 blocks either way.
    ("sm_90", 256, 32, 0, 8, 64, "warps"),
    # 128 regs: 4096 per warp, 16 warps, so 4 blocks of 4 warps.
    ("sm_90", 128, 128, 0, 4, 16, "registers"),
    # 40 regs: 1280 per warp, 51 warps, 6 blocks of 8 warps.
    ("sm_90", 256, 40, 0, 6, 48, "registers"),
    # 40000 + 1024 reserved, rounded to 41088 bytes: 2 blocks in 100 KiB.
    ("sm_89", 64, 16, 40000, 2, 4, "shared memory"),
    # One-warp blocks: the 16-block limit of sm_87 binds before its 48 warps.
    ("sm_87", 32, 16, 0, 16, 16, "blocks"),
    # A 32 KiB x tile per one-warp block: 33 KiB each, 6 in 228 KiB.
    ("sm_90", 32, 32, 32768, 6, 6, "shared memory"),
])
def test_occupancy_of_hand_worked_launches(arch, threads, registers, shared, blocks, warps, limiter):
    result = occupancy(arch, threads, registers, shared)
    assert (result.blocks, result.warps, result.limiter) == (blocks, warps, limiter)
    assert result.fraction == pytest.approx(warps / ARCHITECTURES[arch].max_warps)


@pytest.mark.parametrize(("threads", "registers", "shared", "message"), [
    (2048, 32, 0, "threads_per_block"),
    (256, 300, 0, "registers per thread"),
    (32, 32, 300 * 1024, "shared memory per block"),
    (1024, 255, 0, "no thread block"),
])
def test_launches_that_cannot_run_are_refused(threads, registers, shared, message):
    with pytest.raises(ValueError, match=message):
        occupancy("sm_90", threads, registers, shared)
