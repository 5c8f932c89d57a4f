"""Micro-benchmarks (pytest-benchmark) of the SpMV kernels and preprocessing routines.

They are skipped in the normal test run: pyproject's ``addopts`` passes ``--benchmark-skip``, and
``--benchmark-only`` (which overrides it) selects them::

    pytest tests/benchmarks --benchmark-only --benchmark-group-by=param

Every benchmark checks its result against scipy before it is timed. GPU kernels carry the
``cuda`` marker and skip without a GPU. The GPU's name, driver and CUDA version go into the
machine information of saved runs (``--benchmark-autosave`` / ``--benchmark-json``).
"""


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add the CUDA device (name, driver, runtime) where one is visible: pytest-benchmark records only the CPU."""
    try:
        import cupy

        if not cupy.cuda.is_available():
            return
    except ImportError:
        return
    properties = cupy.cuda.runtime.getDeviceProperties(0)
    machine_info["cuda"] = {"device": properties["name"].decode(), "driver": cupy.cuda.runtime.driverGetVersion(),
                            "runtime": cupy.cuda.runtime.runtimeGetVersion(), "cupy": cupy.__version__}
