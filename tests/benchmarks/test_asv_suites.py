"""Every asv benchmark in ``benchmarks/`` runs: setup and body once each, without asv, on its smallest parameters.

A benchmark that raises is one that asv would report as failed (or, worse, silently drop from the
history), so this catches a suite broken by a change of the method code it times. Parameters: of
each parameter list, the smallest value where all values are numbers (a size), every value otherwise
(a method, a network, a device), except for the seeded matrices of the SpMV suites, of which the
smallest is taken; a ``setup`` that raises ``NotImplementedError`` (a missing device)
is asv's "n/a" and skips that combination.
"""

import importlib
import inspect
import itertools
import numbers
import pkgutil

import pytest

import benchmarks
from benchmarks.common import MATRICES

PREFIXES = ("time_", "peakmem_", "mem_", "track_", "timeraw_")


def _suites() -> list:
    """Every benchmark class of every ``benchmarks/bench_*.py`` module."""
    classes = []
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("bench_"):
            module = importlib.import_module(f"benchmarks.{info.name}")
            classes += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                        if cls.__module__ == module.__name__ and any(name.startswith(PREFIXES) for name in vars(cls))]
    return classes


def _param_lists(cls) -> list[list]:
    """asv's ``params`` as a list of lists (a single flat list is one parameter)."""
    params = getattr(cls, "params", [])
    if params and not isinstance(params[0], list | tuple):
        return [list(params)]
    return [list(values) for values in params]


def _rows(matrix: str) -> int:
    """Rows of a seeded benchmark matrix, from its spec (without generating it)."""
    spec = MATRICES[matrix]
    return spec.get("n", spec.get("nrows"))


def smallest_combinations(cls) -> list[tuple]:
    """The parameter combinations the test runs: the smallest size, every category (module docstring); of the
    seeded matrices (a ``matrix`` parameter), the one of fewest rows."""
    chosen = []
    names = getattr(cls, "param_names", [])
    for index, values in enumerate(_param_lists(cls)):
        if index < len(names) and names[index] == "matrix":
            chosen.append([min(values, key=_rows)])
        elif all(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in values):
            chosen.append([min(values)])
        else:
            chosen.append(values)
    return list(itertools.product(*chosen))


CASES = [(cls, name) for cls in _suites() for name in sorted(vars(cls)) if name.startswith(PREFIXES)]


def test_every_paper_has_a_suite():
    """One module per hot path of the suite's papers (SpMV/HBP and the four torch families)."""
    modules = {cls.__module__.rpartition(".")[2] for cls, _ in CASES}
    assert {"bench_spmv", "bench_hbp", "bench_continual", "bench_diffusion", "bench_detection",
            "bench_pruning"} <= modules


@pytest.mark.parametrize(("cls", "name"), CASES, ids=[f"{cls.__module__.rpartition('.')[2]}.{cls.__name__}.{name}"
                                                     for cls, name in CASES])
def test_benchmark_runs(cls, name):
    ran = 0
    for combination in smallest_combinations(cls):
        instance = cls()
        try:
            try:
                if hasattr(instance, "setup"):
                    instance.setup(*combination)
            except NotImplementedError:
                continue  # asv's "n/a" (teardown still runs, as asv runs it)
            result = getattr(instance, name)(*combination)
            if name.startswith("track_"):
                assert isinstance(result, numbers.Real), f"{name}{combination} returned {result!r}, not a number"
            ran += 1
        finally:
            if hasattr(instance, "teardown"):
                instance.teardown(*combination)
    if not ran:
        pytest.skip(f"every parameter combination of {cls.__name__} needs a missing device")
