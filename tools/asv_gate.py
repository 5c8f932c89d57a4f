"""The performance gate of ``tox -e bench``: asv continuous from a base commit to HEAD, failing on a regression.

The base is the merge base of HEAD with ``ASV_BASE_BRANCH`` (default ``main``), or ``HEAD~1`` when
HEAD is on that branch (or it does not exist). Both commits are built and installed in asv's own
virtualenvs (``asv.conf.json``), benchmarked in interleaved rounds, and the run exits 1 when a
benchmark got slower by more than ``ASV_FACTOR`` (default 1.1) *and* asv finds the change
statistically significant. Only committed code is measured. Arguments go on to asv
(``-b REGEX`` for some benchmarks)::

    python tools/asv_gate.py                      # from the repository root, as tox -e bench runs it
    ASV_FACTOR=1.25 python tools/asv_gate.py -b Rehearsal

:func:`continuous_command` is the one definition of the asv invocation: tox runs it through
:func:`main`, and ``tests/benchmarks/test_asv_gate.py`` runs the same command on a throwaway
repository to show that it fails on a 4x regression and passes an unchanged pair.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACTOR = "1.1"
DEFAULT_MACHINE = "local"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def base_commit(repo: Path, branch: str = "main") -> str:
    """The merge base of HEAD with ``branch``; HEAD~1 when that is HEAD itself or ``branch`` does not exist."""
    head = _git(repo, "rev-parse", "HEAD")
    try:
        base = _git(repo, "merge-base", "HEAD", branch)
    except subprocess.CalledProcessError:
        base = ""
    return base if base and base != head else _git(repo, "rev-parse", "HEAD~1")


def continuous_command(base: str, head: str, environ: Mapping[str, str] = os.environ,
                       extra: Sequence[str] = ()) -> list[str]:
    """The asv continuous command line comparing ``base`` with ``head``, its factor and machine from ``environ``.

    Interleaved rounds (asv's ``--interleave-rounds``: both commits' benchmarks alternate, round by
    round) make slow drift of a shared machine's load hit both sides alike.
    """
    factor = environ.get("ASV_FACTOR", DEFAULT_FACTOR)
    machine = environ.get("ASV_MACHINE", DEFAULT_MACHINE)
    return [sys.executable, "-m", "asv", "continuous", "--factor", factor, "--interleave-rounds",
            "--machine", machine, "--show-stderr", base, head, *extra]


def register_machine(repo: Path, environ: Mapping[str, str] = os.environ) -> str:
    """Record this machine's description for asv under ``ASV_MACHINE`` (default "local"); returns the name."""
    machine = environ.get("ASV_MACHINE", DEFAULT_MACHINE)
    subprocess.run([sys.executable, "-m", "asv", "machine", "--yes", "--machine", machine], cwd=repo,
                   env=dict(environ), check=True, capture_output=True)
    return machine


def run_gate(repo: Path, extra: Sequence[str] = (), environ: Mapping[str, str] = os.environ,
             base: str | None = None, head: str = "HEAD", capture: bool = True) -> subprocess.CompletedProcess:
    """Register the machine with asv and run :func:`continuous_command` in ``repo`` (output captured, or not).

    The returned process's ``returncode`` is asv's: 1 when performance decreased beyond the factor.
    """
    base = base or base_commit(repo, environ.get("ASV_BASE_BRANCH", "main"))
    head = _git(repo, "rev-parse", head)
    register_machine(repo, environ)
    return subprocess.run(continuous_command(base, head, environ, extra), cwd=repo, env=dict(environ),
                          capture_output=capture, text=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    base = base_commit(ROOT, os.environ.get("ASV_BASE_BRANCH", "main"))
    print(f"asv continuous: {_git(ROOT, 'log', '-1', '--format=%h %s', base)[:80]} -> "
          f"{_git(ROOT, 'log', '-1', '--format=%h %s', 'HEAD')[:80]}", flush=True)
    return run_gate(ROOT, argv, base=base, capture=False).returncode


if __name__ == "__main__":
    sys.exit(main())
