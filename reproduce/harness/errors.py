"""Expected failures of the harness.

An expected failure (a missing file, no network, a bad checksum, a corrupt input) is
raised as :class:`ReproError` with one sentence that says what happened and what to do.
The CLI prints that sentence and exits with status 2; no traceback is shown. Anything
else is a bug and keeps its traceback.
"""


class ReproError(Exception):
    """A failure the user can act on; ``str(err)`` is the whole message."""


class DataError(ReproError):
    """Input data is missing, unreachable, corrupt or fails its checksum."""


class DeviceError(ReproError):
    """The requested device does not exist or cannot be used."""
