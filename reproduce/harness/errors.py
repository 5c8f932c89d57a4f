"""Expected failures of the harness.

An expected failure (a missing file, no network, a bad checksum, a corrupt input) is
raised as :class:`ReproError` with one sentence that says what happened and what to do.
The CLI prints that sentence and exits with status 2; no traceback is shown. Anything
else is a bug and keeps its traceback.

The methods (``methods/``, which never import the harness) raise their own
:class:`methods.errors.DeviceUnavailableError` when a device is missing; :class:`DeviceError`
subclasses it, and :data:`EXPECTED_ERRORS` is what the harness catches as an expected failure.
"""

import difflib

from methods.errors import DeviceUnavailableError


class ReproError(Exception):
    """A failure the user can act on; ``str(err)`` is the whole message."""


class DataError(ReproError):
    """Input data is missing, unreachable, corrupt or fails its checksum."""


class ArtifactError(ReproError):
    """A reproduction script contradicts its own declaration (its summary keys a value by an id that is
    not one of its claims); the message names the script and what to correct."""


class ConfigError(ReproError):
    """A command-line override of an artifact's config (``--set``) is malformed, names a key the config
    does not have, or gives a value that does not read as the type it replaces."""


class DeviceError(ReproError, DeviceUnavailableError):
    """The requested device does not exist or cannot be used (also a methods' DeviceUnavailableError)."""


# Expected failures: the harness's own and a device the methods found missing. Caught where the
# harness turns a failure into one line (the CLI) or a failed record (the runner).
EXPECTED_ERRORS = (ReproError, DeviceUnavailableError)


def close_matches(word: str, choices) -> str:
    """`` (did you mean 'a' or 'b'?)`` for the choices ``difflib`` finds close to ``word``, else ``""``."""
    found = difflib.get_close_matches(word, list(choices), n=3)
    return f" (did you mean {' or '.join(map(repr, found))}?)" if found else ""
