"""Tiny fakes of the real datasets' on-disk formats, for the full-scale paths of the CL artifacts."""

import io
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

import reproduce.continual as runs
from reproduce.harness.data.images import cifar


def _write_tar_gz(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _cifar_records(rng, labels: np.ndarray) -> bytes:
    """CIFAR binary records: label byte(s) then 3072 pixel bytes per image."""
    pixels = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return np.concatenate([labels.reshape(len(labels), -1).astype(np.uint8), pixels], 1).tobytes()


def _cifar10_archive(path):
    """A cifar-10-binary.tar.gz with the official members: one record per class per batch."""
    rng = np.random.default_rng(0)
    labels = np.arange(10)
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": _cifar_records(rng, labels) for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = _cifar_records(rng, labels)
    members["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(f"class{i}" for i in range(10)).encode()
    _write_tar_gz(path, members)


def _cifar100_archive(path):
    """A cifar-100-binary.tar.gz with the official members: (coarse, fine) label bytes, 2 train / 1 test per class."""
    rng = np.random.default_rng(1)
    fine = np.arange(100)
    train = np.stack([np.tile(fine // 5, 2), np.tile(fine, 2)], 1)
    _write_tar_gz(path, {
        "cifar-100-binary/train.bin": _cifar_records(rng, train),
        "cifar-100-binary/test.bin": _cifar_records(rng, np.stack([fine // 5, fine], 1)),
        "cifar-100-binary/fine_label_names.txt": "\n".join(f"fine{i}" for i in range(100)).encode(),
        "cifar-100-binary/coarse_label_names.txt": "\n".join(f"coarse{i}" for i in range(20)).encode(),
    })


def _tiny_imagenet_zip(path):
    """A tiny-imagenet-200.zip laid out as the official one: 200 wnids, one train and one val image each."""
    wnids = [f"n{index:08d}" for index in range(200)]

    def jpeg(value):
        buffer = io.BytesIO()
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(buffer, "JPEG")
        return buffer.getvalue()

    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids[::-1]))
        annotations = []
        for index, wnid in enumerate(wnids):
            bundle.writestr(f"tiny-imagenet-200/train/{wnid}/images/{wnid}_0.JPEG", jpeg(index))
            bundle.writestr(f"tiny-imagenet-200/val/images/val_{index}.JPEG", jpeg(index))
            annotations.append(f"val_{index}.JPEG\t{wnid}\t0\t0\t63\t63")
        bundle.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(annotations))


@pytest.fixture
def fake_full_data(tmp_path, monkeypatch):
    """Tiny archives of CIFAR-10, CIFAR-100 and Tiny-ImageNet in their official formats, served by a stand-in fetch."""
    cifar10, cifar100 = tmp_path / "cifar-10-binary.tar.gz", tmp_path / "cifar-100-binary.tar.gz"
    tiny = tmp_path / "tiny-imagenet-200.zip"
    _cifar10_archive(cifar10)
    _cifar100_archive(cifar100)
    _tiny_imagenet_zip(tiny)
    files = {"cifar10": {cifar10.name: cifar10}, "cifar100": {cifar100.name: cifar100},
             "tiny_imagenet": {tiny.name: tiny}}
    fake_fetch = lambda name, wanted=None, download=True: files[name]  # noqa: E731 - a one-line stand-in
    monkeypatch.setattr(cifar, "fetch", fake_fetch)
    monkeypatch.setattr(runs, "fetch", fake_fetch)
    runs.load_stream.cache_clear()
    yield
    runs.load_stream.cache_clear()
