"""Device selection never raises on a machine without a GPU, and says why it chose."""

import pytest

from reproduce.harness import device as dev
from reproduce.harness.errors import DeviceError


def test_auto_falls_back_to_cpu_with_reason(monkeypatch):
    monkeypatch.setattr(dev, "cuda_device_count", lambda: 0)
    chosen = dev.select_device("auto")
    assert chosen.kind == "cpu" and chosen.tag == "cpu"
    assert "no CUDA device" in chosen.reason
    assert chosen.cores >= 1 and chosen.memory_bytes > 0 and chosen.name


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(dev, "cuda_device_count", lambda: 0)
    with pytest.raises(DeviceError, match="neither CuPy nor torch sees a CUDA GPU"):
        dev.select_device("cuda")


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(dev, "cuda_device_count", lambda: 1)
    with pytest.raises(DeviceError, match="only 1 CUDA device"):
        dev.select_device("cuda:3")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", ""])
def test_bad_spec(spec):
    with pytest.raises(DeviceError, match="--device must be"):
        dev.select_device(spec)


def test_detection_survives_a_broken_cupy(monkeypatch):
    class BrokenCuda:
        @staticmethod
        def is_available():
            raise RuntimeError("cudaErrorInsufficientDriver")

    class BrokenCupy:
        cuda = BrokenCuda

    monkeypatch.setattr(dev, "_cupy", lambda: BrokenCupy)
    assert dev.cuda_device_count() >= 0


def test_cuda_version_string():
    assert dev._cuda_version_string(12040) == "12.4"
    assert dev._cuda_version_string(13000) == "13.0"


def test_bandwidth_is_measured_once_and_cached(monkeypatch):
    calls = []
    monkeypatch.setattr(dev, "measure_cpu_bandwidth", lambda: calls.append(1) or 12.5)
    first = dev.cpu_bandwidth()
    second = dev.cpu_bandwidth()
    assert first["triad_gbs"] == second["triad_gbs"] == 12.5 and len(calls) == 1
    dev.cpu_bandwidth(refresh=True)
    assert len(calls) == 2


def test_triad_measures_a_plausible_bandwidth():
    gbs = dev.measure_cpu_bandwidth(n=1 << 18, repeats=3)
    assert 0.1 < gbs < 10_000


def test_torch_threads_caps_cpu_units_and_restores_the_setting():
    import torch

    from reproduce.harness.device import describe_cpu, torch_threads

    before = torch.get_num_threads()
    with torch_threads(describe_cpu("test"), 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(describe_cpu("test"), None):
        assert torch.get_num_threads() == before
