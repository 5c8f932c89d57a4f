"""PeakMemory on the CPU sees memory touched inside its block, and not memory held from before."""

import sys

import numpy as np
import pytest
import torch

from reproduce.harness.memory import PeakMemory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


def test_cpu_peak_counts_a_block_allocation_and_resets_between_blocks():
    held = np.ones(64 * 2**20 // 8)  # 64 MB alive before and during both blocks
    with PeakMemory(torch.device("cpu")) as first:
        block = np.ones(128 * 2**20 // 8)  # 128 MB touched inside the block
        del block
    with PeakMemory(torch.device("cpu")) as second:
        pass
    assert first.peak_mb >= 120
    assert second.peak_mb < 32
    assert held.sum() > 0
