"""Shared pieces of the diffusion artifacts: models trained once under a file lock, noise images, generators."""

import threading
import time

import numpy as np
import torch
from filelock import FileLock

from reproduce.diffusion_quality import Shared, load_or_train, noise_images, torch_generator


def _shared(path, calls, value):
    """A one-parameter module whose training sets it to ``value`` and logs the call."""
    module = torch.nn.Linear(1, 1, bias=False)

    def train():
        calls.append(value)
        with torch.no_grad():
            module.weight.fill_(value)

    return Shared(module, path, train)


def test_a_shared_model_is_trained_once_then_loaded(tmp_path):
    calls = []
    load_or_train(_shared(tmp_path / "a.pt", calls, 3.0))
    again = _shared(tmp_path / "a.pt", calls, 5.0)
    load_or_train(again)
    assert calls == [3.0] and again.module.weight.item() == 3.0


def test_a_model_another_process_is_training_is_waited_for_after_training_the_free_one(tmp_path):
    """While ``a`` is locked (another worker trains it), ``b`` is trained first; ``a`` is waited for, then trained
    here only if the other worker left no file."""
    calls = []
    held = FileLock(f"{tmp_path / 'a.pt'}.lock")
    held.acquire()
    worker = threading.Thread(target=load_or_train, args=(_shared(tmp_path / "a.pt", calls, 1.0),
                                                          _shared(tmp_path / "b.pt", calls, 2.0)))
    worker.start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "b.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [2.0] and worker.is_alive()  # b done, a still waited for
    torch.save(_shared(tmp_path / "a.pt", [], 7.0).module.state_dict(), tmp_path / "a.pt")  # the other worker's
    held.release()
    worker.join(timeout=30)
    assert not worker.is_alive() and calls == [2.0]


def test_noise_images_are_the_clipped_starting_noise():
    images = noise_images(64, (1, 8, 8), torch.Generator().manual_seed(0))
    assert images.shape == (64, 1, 8, 8) and images.min() == -1.0 and images.max() == 1.0
    assert torch.equal(images, noise_images(64, (1, 8, 8), torch.Generator().manual_seed(0)))


def test_torch_generators_of_one_stream_draw_the_same_numbers():
    draw = [torch.randn(3, generator=torch_generator(np.random.default_rng([0, k]))) for k in (1, 1, 2)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
