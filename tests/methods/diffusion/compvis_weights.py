"""Deterministic stand-in weights for checkpoints in CompVis latent-diffusion's format.

The fixture ``tests/fixtures/compvis_ldm/reference.json`` holds the parameter names and shapes
that the genuine CompVis modules register, and the outputs those modules compute when every
parameter is filled by :func:`fill`. Tests rebuild the same checkpoint from names and shapes
alone, so the fixture needs no weight file. :func:`fill` uses integer arithmetic only (the
splitmix64 finaliser of the element index, seeded by the name's CRC-32), so it gives the same
bits on every platform and NumPy version.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def uniform(key: str, count: int) -> np.ndarray:
    """``count`` reproducible numbers in [-1, 1) (float64) derived from ``key`` and the index."""
    offset = np.uint64(zlib.crc32(key.encode()) * 0x9E3779B97F4A7C15 % 2**64)
    z = np.arange(count, dtype=np.uint64) + offset
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**52 - 1.0


def fill(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor for parameter ``name``: norm scales near 1, biases small, weights ~ 1/sqrt(fan_in)."""
    count = int(np.prod(shape, dtype=np.int64))
    u = uniform(name, count)
    if len(shape) == 1 and "norm" in name and name.endswith("weight"):
        values = 1.0 + 0.1 * u
    elif len(shape) == 1:
        values = 0.05 * u
    elif "embedding" in name:
        values = u
    else:
        values = u * np.sqrt(3.0 / (count // shape[0]))
    return torch.from_numpy(values.reshape(shape).astype(np.float32))


def state_dict(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Every named parameter filled by :func:`fill`."""
    return {name: fill(name, tuple(shape)) for name, shape in shapes.items()}


def ldm_betas(linear_start: float = 0.0015, linear_end: float = 0.0195, timesteps: int = 1000) -> torch.Tensor:
    """latent-diffusion's ``make_beta_schedule("linear")``: sqrt(beta) spaced linearly, float64 -> float32."""
    return (torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2).float()


def write_lightning_checkpoint(path, state: dict[str, torch.Tensor], monkeypatch) -> None:
    """``torch.save`` ``state`` as a PyTorch Lightning 1.4 checkpoint does, callbacks keyed by their class.

    The class is pickled by name as ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``
    (a stand-in module is put in ``sys.modules`` for the save only, through ``monkeypatch``).
    """
    import sys
    import types

    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    callback = type("ModelCheckpoint", (), {"__module__": module.__name__})
    module.ModelCheckpoint = callback
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    torch.save({"epoch": 12, "global_step": 1_000, "pytorch-lightning_version": "1.4.2", "state_dict": state,
                "callbacks": {callback: {"best_model_score": torch.tensor(0.1), "monitor": "val/loss"}},
                "optimizer_states": [], "lr_schedulers": []}, path)
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__):
        monkeypatch.delitem(sys.modules, name)
