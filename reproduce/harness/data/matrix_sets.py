"""Sets of sparse matrices as units of work, and loading the matrix of a unit.

A scale's config names its set with three keys, any of which may be empty:

- ``named``: SuiteSparse ``Group/Name`` ids (found locally or downloaded);
- ``local``: True to take every ``.mtx`` in the ``REPRO_MATRIX_DIRS`` folders;
- ``generated``: specs for :func:`reproduce.harness.data.synthetic.generate`, each with
  a ``name``.

The command-line options ``--matrices Group/Name ...`` and ``--matrix-dir DIR`` (config
keys ``matrices`` and ``matrix_dir``) replace the scale's set when given.
"""

from __future__ import annotations

import re
from pathlib import Path

import scipy.sparse as sp

from reproduce.harness.artifact import Context, Unit
from reproduce.harness.data import suitesparse, synthetic
from reproduce.harness.errors import DataError

MATRIX_OPTIONS = {
    "--matrices": dict(nargs="+", metavar="GROUP/NAME",
                       help="run on these SuiteSparse matrices instead of the scale's set (downloaded if needed)"),
    "--matrix-dir": dict(type=Path, metavar="DIR",
                         help="run on every .mtx file in DIR instead of the scale's set"),
}


def _unit_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", name)


def matrix_units(ctx: Context) -> list[Unit]:
    """The units of the matrix set that ``ctx.config`` names (see the module docstring)."""
    config = ctx.config
    if config.get("matrices") or config.get("matrix_dir"):
        named, local, generated = list(config.get("matrices") or []), False, []
        directory = config.get("matrix_dir")
    else:
        named, local = list(config.get("named", [])), bool(config.get("local"))
        generated, directory = list(config.get("generated", [])), None
    units = [Unit(_unit_id(name), {"matrix": name}) for name in named]
    if local:
        units += [Unit(_unit_id(name), {"matrix": name}) for name in suitesparse.local_matrices()]
    if directory is not None:
        files = sorted(Path(directory).glob("*.mtx")) + sorted(Path(directory).glob("*.mtx.gz"))
        if not files:
            raise DataError(f"no .mtx files in {directory}")
        units += [Unit(_unit_id(f.name.split(".mtx")[0]), {"file": str(f)}) for f in files]
    units += [Unit(_unit_id(f"gen_{spec['name']}"), {"generated": spec}) for spec in generated]
    if not units:
        raise DataError("the matrix set is empty: set REPRO_MATRIX_DIRS to a folder of .mtx files "
                        "(for example ../shared/data/suitesparse), or pass --matrices Group/Name")
    return units


def load_unit_matrix(unit: Unit, ctx: Context) -> tuple[sp.csr_matrix, dict]:
    """The matrix of ``unit`` and its provenance (source, file, sha256 or generator spec)."""
    params = unit.params
    if "matrix" in params:
        matrix, source = suitesparse.load_matrix(params["matrix"])
        return matrix, source.provenance()
    if "file" in params:
        matrix, source = suitesparse.load_matrix_file(Path(params["file"]))
        return matrix, source.provenance()
    spec = {k: v for k, v in params["generated"].items() if k != "name"}
    return synthetic.generate(spec, ctx.rng(unit)), {"source": "generated", "spec": params["generated"],
                                                     "seed": ctx.seed}


def fetch_named(ctx: Context) -> list[str]:
    """Download the named matrices of ``ctx.config`` (for ``repro fetch``); a line each."""
    names = list(ctx.config.get("matrices") or ctx.config.get("named", []))
    return [f"{name}: {suitesparse.locate_matrix(name).path}" for name in names]


# The parts of an Artifact that every sweep over a matrix set shares: Artifact(..., **MATRIX_SWEEP).
MATRIX_SWEEP = {"units": matrix_units, "options": MATRIX_OPTIONS, "fetch": fetch_named}
