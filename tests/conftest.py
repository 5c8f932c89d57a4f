"""Shared fixtures: the real data in ../shared/data, a loopback HTTP server, GPU markers."""

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _data_dir(variable: str, fallback: Path) -> Path | None:
    """The first existing folder of ``$variable``, else ``fallback`` if it exists; resolved (links
    followed), as the harness resolves the folders it is given."""
    for entry in os.environ.get(variable, "").split(os.pathsep):
        if entry and Path(entry).is_dir():
            return Path(entry).resolve()
    return fallback.resolve() if fallback.is_dir() else None


@pytest.fixture(scope="session")
def suitesparse_dir() -> Path:
    """The folder of real SuiteSparse .mtx files (``REPRO_MATRIX_DIRS`` or ../shared)."""
    path = _data_dir("REPRO_MATRIX_DIRS", SHARED / "suitesparse")
    if path is None:
        pytest.skip("no SuiteSparse test matrices: set REPRO_MATRIX_DIRS to ../shared/data/suitesparse")
    return path


@pytest.fixture(scope="session")
def images_dir() -> Path:
    """The folder of real small image sets (``REPRO_DATA_DIRS`` or ../shared/data/images)."""
    path = _data_dir("REPRO_DATA_DIRS", SHARED / "images")
    if path is None:
        pytest.skip("no image sets: set REPRO_DATA_DIRS to ../shared/data/images")
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serve a fresh folder on 127.0.0.1; yields ``(folder, base_url)``.

    Files written into the folder during the test are served at ``base_url/<relpath>``.
    """
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dead_url():
    """A loopback URL on which nothing listens (an offline mirror)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache so nothing leaks between tests."""
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip with a reason where no CUDA GPU is visible."""
    if not any("cuda" in item.keywords for item in items):
        return
    from reproduce.harness.device import cuda_device_count

    if cuda_device_count() == 0:
        skip = pytest.mark.skip(reason="needs a CUDA GPU; neither CuPy nor torch sees one here")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
