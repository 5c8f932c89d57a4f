"""Sets of sparse matrices as units of work, and loading the matrix of a unit.

A scale's config names its set with three keys, any of which may be empty:

- ``named``: SuiteSparse ``Group/Name`` ids (found locally or downloaded);
- ``local``: True to take every ``.mtx`` in the ``REPRO_MATRIX_DIRS`` folders;
- ``generated``: specs for :func:`reproduce.harness.data.synthetic.generate`, each with
  a ``name``.

The command-line options ``--matrices Group/Name ...`` and ``--matrix-dir DIR`` (config
keys ``matrices`` and ``matrix_dir``) replace the scale's set when given.

``--matrices all`` walks the whole collection's index
(:func:`reproduce.harness.data.suitesparse.collection_index`), in id order, narrowed by
``--min-nnz``, ``--max-nnz`` and ``--max-rows``. Each unit's params carry the matrix's
index entry (id, rows, cols, nnz, kind). A matrix that the walk has to download is
fetched just before its unit reads it and deleted as soon as it is read (its provenance
says so), unless ``--keep-matrices`` keeps it in the cache: the whole collection is about
100 GB compressed. ``keep_matrices`` is left out of the config hash (it changes no result).
"""

from __future__ import annotations

import re
from pathlib import Path

import scipy.sparse as sp

from reproduce.harness.artifact import Context, Unit
from reproduce.harness.data import suitesparse, synthetic
from reproduce.harness.errors import DataError

ALL = "all"
# --flag -> (config key, keyword of suitesparse.collection_index); the keys carry an
# index_ prefix so they never meet an artifact's own (hbp/preprocessing's min_nnz).
SIZE_FILTERS = {"--min-nnz": ("index_min_nnz", "min_nnz"), "--max-nnz": ("index_max_nnz", "max_nnz"),
                "--max-rows": ("index_max_rows", "max_rows")}
INDEX_FIELDS = ("id", "rows", "cols", "nnz", "kind")

MATRIX_OPTIONS = {
    "--matrices": dict(nargs="+", metavar="GROUP/NAME",
                       help="run on these SuiteSparse matrices instead of the scale's set (downloaded if needed); "
                            "'all' walks the whole collection's index (see --max-nnz, --keep-matrices)"),
    "--matrix-dir": dict(type=Path, metavar="DIR",
                         help="run on every .mtx file in DIR instead of the scale's set"),
    "--min-nnz": dict(type=int, metavar="N", dest=SIZE_FILTERS["--min-nnz"][0],
                      help="with --matrices all: only matrices with at least N nonzeros"),
    "--max-nnz": dict(type=int, metavar="N", dest=SIZE_FILTERS["--max-nnz"][0],
                      help="with --matrices all: only matrices with at most N nonzeros"),
    "--max-rows": dict(type=int, metavar="N", dest=SIZE_FILTERS["--max-rows"][0],
                       help="with --matrices all: only matrices with at most N rows"),
    "--keep-matrices": dict(action="store_true", default=None,
                            help="with --matrices all: keep each downloaded matrix in the cache (by default it is "
                                 "deleted once its unit has read it)"),
}


def _unit_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", name)


def walks_collection(config: dict) -> bool:
    """Whether ``config`` asks for the whole collection (``--matrices all``)."""
    return ALL in (config.get("matrices") or [])


def _collection_units(config: dict) -> list[Unit]:
    """One unit per matrix of the collection's index that passes the size filters."""
    if config["matrices"] != [ALL]:
        raise DataError(f"--matrices {ALL} stands alone; drop the other names or run them separately")
    entries = suitesparse.collection_index(**{keyword: config.get(key) for key, keyword in SIZE_FILTERS.values()})
    if not entries:
        given = ", ".join(f"{flag} {config[key]}" for flag, (key, _) in SIZE_FILTERS.items()
                          if config.get(key) is not None)
        raise DataError(f"no matrix of the SuiteSparse index passes {given or 'the filters'}; widen them")
    return [Unit(_unit_id(e["name"]), {"matrix": e["name"], "index": {k: e[k] for k in INDEX_FIELDS}})
            for e in entries]


def matrix_units(ctx: Context) -> list[Unit]:
    """The units of the matrix set that ``ctx.config`` names (see the module docstring)."""
    config = ctx.config
    if not walks_collection(config) and any(config.get(key) is not None for key, _ in SIZE_FILTERS.values()):
        raise DataError("--min-nnz, --max-nnz and --max-rows filter the collection's index: use them with "
                        f"--matrices {ALL}")
    if walks_collection(config):
        return _collection_units(config)
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
        provenance = source.provenance()
        if source.source == "download" and walks_collection(ctx.config) and not ctx.config.get("keep_matrices"):
            suitesparse.remove_downloaded(params["matrix"])
            provenance["deleted_after_use"] = True
        return matrix, provenance
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
MATRIX_SWEEP = {"units": matrix_units, "options": MATRIX_OPTIONS, "fetch": fetch_named,
                "unhashed_keys": ("keep_matrices",)}
