"""The dataset registry and fetcher: local folders, cache, loopback downloads, failures."""

import dataclasses
import re
import shutil

import pytest

from reproduce.harness.data import datasets
from reproduce.harness.data.datasets import DATASETS, REGISTRY, describe, fetch, file_digest
from reproduce.harness.errors import DataError
from reproduce.harness.paths import cache_dir

LABELS = "t10k-labels-idx1-ubyte.gz"
IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS_MD5 = "ec29112dd5afa0611ce80d1b7f02629c"


@pytest.fixture
def no_local_data(monkeypatch):
    """Neither local folders nor a mirror: only the cache and the official URLs."""
    monkeypatch.delenv("REPRO_DATA_DIRS", raising=False)
    monkeypatch.delenv("REPRO_DATA_URL", raising=False)


@pytest.fixture
def mirror(images_dir, http_root, no_local_data, monkeypatch):
    """A loopback mirror serving the real MNIST test labels as ``<url>/mnist/<file>``."""
    served, base_url = http_root
    (served / "mnist").mkdir()
    shutil.copy(images_dir / "mnist" / LABELS, served / "mnist" / LABELS)
    monkeypatch.setenv("REPRO_DATA_URL", base_url)
    return served


def cache_contents(dataset: str) -> list[str]:
    return sorted(path.name for path in cache_dir("datasets", dataset).iterdir())


def test_registry_lists_the_papers_datasets_with_md5s():
    assert DATASETS == ("mnist", "cifar10", "cifar100", "tiny_imagenet", "coco2017", "fid_inception",
                        "resnet50_imagenet")
    weights = {"fid_inception", "resnet50_imagenet"}  # torch.hub-style names: only a sha256 prefix is published
    for entry in REGISTRY.values():
        for remote in entry.files.values():
            published = r"sha256:[0-9a-f]{8,64}" if entry.name in weights else r"md5:[0-9a-f]{32}"
            assert re.fullmatch(published, remote.known_hash), remote.name
            assert remote.urls and all(url.endswith("/" + remote.name) for url in remote.urls)
    assert set(REGISTRY["cifar10"].files) == {"cifar-10-binary.tar.gz", "cifar-10-python.tar.gz"}
    assert set(REGISTRY["coco2017"].files) == {"train2017.zip", "val2017.zip", "annotations_trainval2017.zip"}


def test_download_verifies_then_serves_from_cache_when_offline(mirror, dead_url, monkeypatch):
    path = fetch("mnist", [LABELS])[LABELS]

    assert path.parent == cache_dir("datasets", "mnist")
    assert file_digest(path, "md5") == LABELS_MD5
    assert cache_contents("mnist") == [LABELS]

    (mirror / "mnist" / LABELS).unlink()
    monkeypatch.setenv("REPRO_DATA_URL", dead_url)
    assert fetch("mnist", [LABELS]) == {LABELS: path}


def test_wrong_checksum_raises_and_leaves_the_cache_clean(mirror, monkeypatch):
    wrong = "0" * 32
    entry = REGISTRY["mnist"].files[LABELS]
    monkeypatch.setitem(REGISTRY["mnist"].files, LABELS, dataclasses.replace(entry, known_hash=f"md5:{wrong}"))

    with pytest.raises(DataError) as caught:
        fetch("mnist", [LABELS])

    message = str(caught.value)
    assert LABELS in message and wrong in message and LABELS_MD5 in message
    assert cache_contents("mnist") == []


def test_corrupt_cached_copy_is_replaced_by_a_fresh_download(mirror):
    (cache_dir("datasets", "mnist") / LABELS).write_bytes(b"not the labels")

    path = fetch("mnist", [LABELS])[LABELS]

    assert file_digest(path, "md5") == LABELS_MD5


def test_offline_and_not_cached_is_one_clear_error(no_local_data, dead_url, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_URL", dead_url)

    with pytest.raises(DataError) as caught:
        fetch("mnist", [LABELS, IMAGES])

    message = str(caught.value)
    assert LABELS in message and IMAGES in message
    assert "REPRO_DATA_DIRS" in message and str(cache_dir("datasets", "mnist")) in message
    assert "--scale quick" in message and "--scale smoke" in message
    assert caught.value.__context__ is None
    assert cache_contents("mnist") == []


def test_missing_file_on_the_mirror_names_the_http_status(http_root, no_local_data, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_URL", http_root[1])

    with pytest.raises(DataError, match="HTTP 404"):
        fetch("mnist", [LABELS])


def test_no_download_when_turned_off(no_local_data, monkeypatch):
    monkeypatch.setattr(datasets, "_download", pytest.fail)

    with pytest.raises(DataError, match=f"{LABELS} of mnist .*downloads are turned off.*REPRO_DATA_DIRS"):
        fetch("mnist", [LABELS], download=False)


def test_local_folders_are_searched_and_verified(images_dir, no_local_data, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_DIRS", str(images_dir))

    paths = fetch("mnist", [IMAGES, LABELS], download=False)

    assert paths == {IMAGES: images_dir / "mnist" / IMAGES, LABELS: images_dir / "mnist" / LABELS}
    assert cache_contents("mnist") == []


def test_torchvision_mnist_layout_is_found(images_dir, tmp_path, no_local_data, monkeypatch):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(images_dir / "mnist" / LABELS, raw / LABELS)
    monkeypatch.setenv("REPRO_DATA_DIRS", str(tmp_path / "data"))

    assert fetch("mnist", [LABELS], download=False) == {LABELS: raw / LABELS}


def test_corrupt_local_copy_names_both_hashes(tmp_path, no_local_data, monkeypatch):
    (tmp_path / LABELS).write_bytes(b"damaged")
    monkeypatch.setenv("REPRO_DATA_DIRS", str(tmp_path))

    with pytest.raises(DataError) as caught:
        fetch("mnist", [LABELS])

    message = str(caught.value)
    assert str(tmp_path / LABELS) in message and LABELS_MD5 in message
    assert file_digest(tmp_path / LABELS, "md5") in message


def test_unknown_dataset_and_file_are_data_errors():
    with pytest.raises(DataError, match="choose one of mnist, cifar10"):
        fetch("imagenet")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        fetch("mnist", ["train-images.gz"])


def test_describe_lists_files_sizes_and_mirror_urls(monkeypatch):
    monkeypatch.setenv("REPRO_DATA_URL", "http://127.0.0.1:9/data/")

    listing = describe("mnist")

    assert [item["name"] for item in listing["files"]] == list(REGISTRY["mnist"].files)
    assert listing["total_bytes"] == 9_912_422 + 28_881 + 1_648_877 + 4_542
    assert listing["files"][3]["urls"] == [f"http://127.0.0.1:9/data/mnist/{LABELS}"]
    assert listing["files"][3]["hash"] == f"md5:{LABELS_MD5}"


def test_a_published_sha256_prefix_verifies_the_file_it_names(tmp_path):
    """Weight files publish only the first digits of their sha256 (torch.hub); 8 or more are required."""
    path = tmp_path / "weights.pth"
    path.write_bytes(b"inception")
    digest = datasets.file_digest(path, "sha256")
    assert datasets._check(path, datasets.RemoteFile(path.name, f"sha256:{digest[:8]}", None, ())) is None
    assert datasets._check(path, datasets.RemoteFile(path.name, f"sha256:{digest[:7]}", None, ())) == digest
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    assert datasets._check(path, datasets.RemoteFile(path.name, f"sha256:{wrong}", None, ())) == digest
