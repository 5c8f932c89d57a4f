"""Figures are built with matplotlib's object API: nothing in the suite touches pyplot's global state.

A figure made with ``matplotlib.figure.Figure()`` belongs to no backend and to no global list of open
figures: it is drawn by whoever saves it (``Figure.savefig``) and freed with its last reference. pyplot
keeps every figure it makes until someone closes it, and ``matplotlib.use`` switches a process-wide
backend; the suite needs neither. This test reads every Python file of the suite with :mod:`ast` and
fails on an import of ``matplotlib.pyplot`` (in any spelling) or a call of ``matplotlib.use``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("reproduce", "methods", "tools", "benchmarks", "tests", "cuda_emu")


def global_state_uses(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` for each import of ``matplotlib.pyplot`` or call of ``matplotlib.use`` in ``source``.

    Catches ``import matplotlib.pyplot``, ``from matplotlib import pyplot``, ``from matplotlib.pyplot
    import ...``, ``from matplotlib import use`` and ``matplotlib.use(...)`` (under any alias of
    ``matplotlib``).
    """
    tree = ast.parse(source)
    found = []
    aliases = {"matplotlib"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                if name.name == "matplotlib.pyplot" or name.name.startswith("matplotlib.pyplot."):
                    found.append((node.lineno, f"import {name.name}"))
                elif name.name == "matplotlib" and name.asname:
                    aliases.add(name.asname)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "matplotlib.pyplot" or node.module.startswith("matplotlib.pyplot."):
                found.append((node.lineno, f"from {node.module} import ..."))
            elif node.module == "matplotlib":
                found += [(node.lineno, f"from matplotlib import {name.name}") for name in node.names
                          if name.name in ("pyplot", "use")]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use"
                and isinstance(node.func.value, ast.Name) and node.func.value.id in aliases):
            found.append((node.lineno, f"{node.func.value.id}.use(...)"))
    return sorted(found)


def suite_files() -> list[Path]:
    """Every ``.py`` file under the suite's packages."""
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_the_suite_never_uses_pyplot_or_switches_the_backend():
    files = suite_files()
    assert len(files) > 100, f"found only {len(files)} Python files under {PACKAGES}: is ROOT {ROOT} right?"
    offences = [f"{path.relative_to(ROOT)}:{line}: {what}"
                for path in files for line, what in global_state_uses(path.read_text(encoding="utf-8"))]
    assert not offences, "build figures with matplotlib.figure.Figure(), not pyplot:\n" + "\n".join(offences)


@pytest.mark.parametrize("source", [
    "import matplotlib.pyplot as plt",
    "import matplotlib.pyplot",
    "from matplotlib import pyplot",
    "from matplotlib import pyplot as plt, ticker",
    "from matplotlib.pyplot import subplots",
    "from matplotlib import use",
    "import matplotlib\nmatplotlib.use('Agg')",
    "import matplotlib as mpl\nmpl.use('Agg')",
    "def plot():\n    import matplotlib.pyplot as plt\n    return plt.figure()",
])
def test_the_check_sees_every_spelling(source):
    assert global_state_uses(source), source


@pytest.mark.parametrize("source", [
    "from matplotlib.figure import Figure",
    "import matplotlib.ticker",
    "from matplotlib import ticker",
    "import matplotlib\nmatplotlib.rcParams['font.size'] = 8",
    "import numpy as np\nnp.use = None\nnp.use()",
])
def test_the_check_passes_the_object_api(source):
    assert global_state_uses(source) == []
