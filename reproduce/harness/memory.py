"""Peak memory of a block of work, on the GPU or the CPU.

On CUDA, ``torch.cuda.max_memory_allocated`` (what the CL papers' code prints); on the
CPU, the growth of the process's resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs`` after ``malloc_trim``) over its size when the block starts. The
CPU figure includes the allocator's slack and is comparable only between blocks measured
in one process on one machine. Off Linux the CPU figure is NaN.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import torch


class PeakMemory:
    """Peak memory of a block in MB: CUDA allocator on a GPU, resident-set growth on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = float("nan")
        self._base = 0

    @staticmethod
    def _status_kb(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif sys.platform.startswith("linux"):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self._base = self._status_kb("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif sys.platform.startswith("linux"):
            self.peak_mb = (self._status_kb("VmHWM") - self._base) / 1024
