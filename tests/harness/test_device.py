"""Device selection never raises on a machine without a GPU, and says why it chose."""

import json
import os
import shutil

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


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", "", "cuda-emu:0", "cuda_emu", "emu"])
def test_bad_spec(spec):
    with pytest.raises(DeviceError, match="--device must be auto, cpu, cuda, cuda:N or cuda-emu"):
        dev.select_device(spec)


needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                    reason="the emulated CUDA device needs a host C++ compiler (g++ or $CXX)")


@needs_compiler
def test_cuda_emu_is_described(monkeypatch):
    import cuda_emu

    monkeypatch.setenv("REPRO_CUDA_EMU_WORKERS", "3")
    chosen = dev.select_device(" CUDA-EMU ")
    assert (chosen.kind, chosen.index, chosen.tag, chosen.name) == ("cuda-emu", None, "cuda-emu", cuda_emu.NAME)
    assert "--device cuda-emu" in chosen.reason
    assert chosen.extra["timing_comparable"] is False and chosen.extra["workers"] == 3
    assert chosen.extra["compiler_version"] and chosen.extra["compiler"]
    assert not dev.timing_comparable(chosen)
    assert dev.timing_comparable(dev.describe_cpu("test"))
    json.dumps(chosen.to_json())  # recorded as JSON with every result


def test_a_recorded_emulated_device_stays_incomparable():
    recorded = dev.Device(kind="cuda-emu", index=None, name="emulated", reason="", extra={"timing_comparable": False})
    assert not dev.timing_comparable(recorded)
    assert not dev.timing_comparable(dev.Device(kind="cuda-emu", index=None, name="emulated", reason=""))


def test_auto_never_picks_cuda_emu(monkeypatch):
    monkeypatch.setattr(dev, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(dev, "describe_cuda_emu", lambda reason: pytest.fail("auto described the emulated device"))
    assert dev.select_device("auto").kind == "cpu"


def test_cuda_emu_without_a_compiler_says_why(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-for-repro")
    with pytest.raises(DeviceError, match="C\\+\\+ compiler"):
        dev.select_device("cuda-emu")
    emulated = [entry for entry in dev.available_devices() if entry["device"] == "cuda-emu"]
    assert emulated and emulated[0]["available"] is False and "no-such-compiler-for-repro" in emulated[0]["why_not"]


def test_available_devices_without_a_gpu(monkeypatch):
    monkeypatch.setattr(dev, "cuda_device_count", lambda: 0)
    devices = {entry["device"]: entry for entry in dev.available_devices()}
    assert devices["cpu"]["available"] is True
    assert devices["cuda"]["available"] is False and "CUDA GPU" in devices["cuda"]["why_not"]
    assert "cuda-emu" in devices


@needs_compiler
@pytest.mark.parametrize("spec", ["cpu", "cuda-emu"])
def test_repro_env_lists_the_devices_here(spec, capsys, monkeypatch):
    from reproduce.harness import cli

    monkeypatch.setattr(dev, "cuda_device_count", lambda: 0)
    assert cli.main(["env", "--device", spec]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["device"]["kind"] == spec and "environment" in info
    devices = {entry["device"]: entry for entry in info["available_devices"]}
    assert devices["cpu"]["available"] and devices["cpu"]["artifacts"] == "all"
    assert devices["cuda-emu"]["available"] and devices["cuda-emu"]["name"]
    assert {"hbp/correctness", "hbp/spmv"} <= set(devices["cuda-emu"]["artifacts"])
    assert "hbp/preprocessing" not in devices["cuda-emu"]["artifacts"]


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


def test_torch_threads_leaves_a_cuda_unit_alone_and_cpu_threads_caps_any():
    import torch

    from reproduce.harness.device import Device, cpu_threads, torch_threads

    before = torch.get_num_threads()
    with torch_threads(Device(kind="cuda", index=0, name="a GPU", reason="test"), before + 1):
        assert torch.get_num_threads() == before
    with cpu_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_deterministic_torch_holds_for_the_block_and_restores_after_an_error():
    import torch

    from reproduce.harness.device import deterministic_torch

    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="inside"):
        with deterministic_torch():
            assert torch.are_deterministic_algorithms_enabled()
            raise RuntimeError("inside")
    assert not torch.are_deterministic_algorithms_enabled()
