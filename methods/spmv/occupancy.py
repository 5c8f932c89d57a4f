"""Theoretical occupancy of a CUDA kernel launch: resident warps per SM over the SM's maximum.

The CUDA occupancy formula (the one behind ``cudaOccupancyMaxActiveBlocksPerMultiprocessor`` and
NVIDIA's occupancy calculator): the thread blocks resident on one SM are the fewest allowed by
each of four limits,

- warps: ``floor(max_warps / warps_per_block)``;
- blocks: the architecture's maximum resident thread blocks;
- registers: registers are allocated per warp in units of 256 (``ceil(32 * regs / 256) * 256``),
  so ``floor(floor(registers_per_sm / regs_per_warp) / warps_per_block)``;
- shared memory: each block takes its static plus dynamic shared memory plus 1 KiB reserved by
  the runtime (compute capability >= 8.0), rounded up to 128 bytes, out of the SM's maximum
  carve-out: ``floor(shared_per_sm / that)``;

and occupancy is ``blocks * warps_per_block / max_warps``. The limits per architecture are the
CUDA C++ Programming Guide's "Technical Specifications per Compute Capability" table, for the
three architectures the HBP paper's claims name (Jetson AGX Orin: sm_87, RTX 4090: sm_89,
H100/H200: sm_90).
"""

from __future__ import annotations

from dataclasses import dataclass

WARP_SIZE = 32
REGISTER_UNIT = 256  # registers are allocated per warp in multiples of this
SHARED_UNIT = 128  # bytes: shared memory is allocated per block in multiples of this
SHARED_RESERVED = 1024  # bytes the runtime reserves per thread block (compute capability >= 8.0)


@dataclass(frozen=True)
class Architecture:
    """Per-SM limits of one compute capability (shared memory in bytes, at the largest carve-out)."""

    name: str
    max_warps: int
    max_blocks: int
    shared_per_sm: int
    shared_per_block: int
    registers: int = 65536
    max_registers_per_thread: int = 255


ARCHITECTURES = {
    "sm_87": Architecture("sm_87", max_warps=48, max_blocks=16, shared_per_sm=164 * 1024, shared_per_block=163 * 1024),
    "sm_89": Architecture("sm_89", max_warps=48, max_blocks=24, shared_per_sm=100 * 1024, shared_per_block=99 * 1024),
    "sm_90": Architecture("sm_90", max_warps=64, max_blocks=32, shared_per_sm=228 * 1024, shared_per_block=227 * 1024),
}


@dataclass(frozen=True)
class Occupancy:
    """Resident thread blocks and warps per SM of one launch, and which limit binds."""

    blocks: int
    warps: int
    fraction: float  # warps / the architecture's max_warps
    limiter: str  # "warps", "blocks", "registers" or "shared memory"


def occupancy(arch: str | Architecture, threads_per_block: int, registers_per_thread: int,
              shared_bytes: int) -> Occupancy:
    """The theoretical occupancy of a launch (module docstring).

    Parameters
    ----------
    arch : str or Architecture
        A key of :data:`ARCHITECTURES` (``"sm_90"``) or the limits themselves.
    threads_per_block : int
        1..1024.
    registers_per_thread : int
        As ``nvcc --resource-usage`` reports it.
    shared_bytes : int
        Static plus dynamic shared memory per thread block, in bytes.

    Raises
    ------
    ValueError
        When the launch cannot run at all (too many threads, registers or shared bytes).
    """
    limits = ARCHITECTURES[arch] if isinstance(arch, str) else arch
    if not 1 <= threads_per_block <= 1024:
        raise ValueError(f"threads_per_block must be in 1..1024, got {threads_per_block}")
    if not 0 <= registers_per_thread <= limits.max_registers_per_thread:
        raise ValueError(f"{registers_per_thread} registers per thread: {limits.name} allows "
                         f"{limits.max_registers_per_thread}")
    if not 0 <= shared_bytes <= limits.shared_per_block:
        raise ValueError(f"{shared_bytes} bytes of shared memory per block: {limits.name} allows "
                         f"{limits.shared_per_block}")
    warps_per_block = -(-threads_per_block // WARP_SIZE)
    register_warps = limits.registers
    if registers_per_thread:
        per_warp = -(-registers_per_thread * WARP_SIZE // REGISTER_UNIT) * REGISTER_UNIT
        register_warps = limits.registers // per_warp
    per_block_shared = -(-(shared_bytes + SHARED_RESERVED) // SHARED_UNIT) * SHARED_UNIT
    bounds = {
        "warps": limits.max_warps // warps_per_block,
        "blocks": limits.max_blocks,
        "registers": register_warps // warps_per_block,
        "shared memory": limits.shared_per_sm // per_block_shared,
    }
    limiter = min(bounds, key=bounds.get)
    blocks = bounds[limiter]
    if blocks == 0:
        raise ValueError(f"no thread block of this launch fits one {limits.name} SM (limited by {limiter})")
    warps = blocks * warps_per_block
    return Occupancy(blocks=blocks, warps=warps, fraction=warps / limits.max_warps, limiter=limiter)
