"""Exceptions the methods raise for conditions outside the code, which a caller is expected to handle.

:class:`DeviceUnavailableError`: an executor was asked for a device this machine cannot provide (no
CuPy, no CUDA GPU, no host compiler for the emulated device). Its message says what is missing
and what to do instead. The harness (``reproduce/``) treats it as an expected failure: its
``DeviceError`` subclasses it, and its command line prints the message without a traceback.
"""

from __future__ import annotations

__all__ = ["DeviceUnavailableError"]


class DeviceUnavailableError(RuntimeError):
    """The requested device does not exist or cannot be used here; ``str(err)`` says why and what to do."""
