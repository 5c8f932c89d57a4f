"""The HBP claims are judged from per-matrix strata of interleaved timing rounds.

hbp/preprocessing: "mean over matrices" of each matrix's mean per-round speed-up of hash over
sort (and over DP), matrices below ``min_nnz`` left out; a CPU run is labelled
"(other device)" against the paper's GPU numbers. hbp/spmv: on a CUDA device, "max over
matrices" of HBP's per-round speed-ups over the CSR baseline.
"""

from __future__ import annotations

import numpy as np
import pytest

from reproduce.harness.artifact import Context
from reproduce.harness.claims import OTHER_DEVICE
from reproduce.harness.device import Device, describe_cpu
from reproduce.harness.records import Record, metric
from reproduce.harness.runner import judge_records, resolve_config, run_artifact
from reproduce.hbp import preprocessing, spmv
from reproduce.hbp.samples import claim_samples, interleaved_rounds, round_speedups, speedup_samples

CPU = Device(kind="cpu", index=None, name="test CPU", reason="test")
RTX = Device(kind="cuda", index=0, name="NVIDIA GeForce RTX 4090", reason="test")


def test_interleaved_rounds_keep_the_fastest_call_of_each_batch():
    """Rounds alternate the names; a batch ends at ``max_batch`` calls (here before ``min_round_s``), or after one
    call when ``min_round_s`` is 0."""
    order = []

    def call(name, seconds):
        values = iter(seconds)
        return lambda: order.append(name) or {"total": next(values), "name": name}

    times, batches = interleaved_rounds({"a": call("a", [0.009, 0.001, 0.002, 0.004, 0.003, 0.005]),
                                         "b": call("b", [0.008, 0.002, 0.003, 0.003, 0.0025, 0.007])},
                                        rounds=2, min_round_s=60.0, max_batch=3)
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 and batches == {"a": 3, "b": 3}
    assert [t["total"] for t in times["a"]] == [0.001, 0.003] and [t["total"] for t in times["b"]] == [0.002, 0.0025]
    assert all(t["name"] == "a" for t in times["a"])
    single, batches = interleaved_rounds({"a": call("a", [3.0, 1.0])}, rounds=2, min_round_s=0.0)
    assert batches == {"a": 1} and [t["total"] for t in single["a"]] == [3.0, 1.0]


def test_round_speedups_pair_rounds_one_to_one():
    assert round_speedups([2.0, 3.0, 4.0], [1.0, 1.5, 4.0]) == [2.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="pair rounds one to one"):
        round_speedups([2.0, 3.0], [1.0])


def test_speedup_samples_keep_only_finite_positive_rounds():
    drawn = speedup_samples({"a": [2.0, float("inf"), 3.0], "b": [float("nan")], "c": [1.0, 0.0, 2.0]}, "max")
    assert dict(drawn.strata) == {"a": [2.0, 3.0], "c": [1.0, 2.0]} and drawn.statistic == "max"
    assert drawn.point() == 2.5
    assert speedup_samples({"a": [float("nan")]}, "mean") is None


def test_claim_samples_leave_out_matrices_whose_rounds_measured_a_busy_machine():
    quiet = {f"m{i}": {"csr": [2.0, 2.2, 2.1], "hbp": [1.0, 1.1, 1.0]} for i in range(4)}
    judged = claim_samples(quiet, "csr", "hbp", "max")
    assert judged.withheld is None and judged.note is None and set(judged.samples.strata) == set(quiet)
    one = {**quiet, "stalled": {"csr": [2.0, 2.1, 2.0], "hbp": [1.0, 150.0, 1.0]}}  # 1 of 5: left out
    judged = claim_samples(one, "csr", "hbp", "max")
    assert judged.withheld is None and set(judged.samples.strata) == set(quiet)
    assert "in 1 of 5 matrices the slowest round of csr or hbp took more than 3x the fastest" in judged.note
    two = {**one, "stalled too": {"csr": [0.1, 50.0, 0.1], "hbp": [1.0, 1.0, 1.0]}}  # 2 of 6: withheld
    judged = claim_samples(two, "csr", "hbp", "max")
    assert judged.withheld.startswith("timings unreliable: in 2 of 6 matrices")
    assert "(at most 500x, stalled too)" in judged.withheld


def _preprocessing_record(unit: str, nnz: int, rounds: dict[str, list[float]]) -> Record:
    """A record as hbp/preprocessing writes it, from each ordering's total ms per round."""
    medians = {o: float(np.median(ms)) for o, ms in rounds.items()}
    metrics = {"nnz": metric(nnz), **{f"{o}_total_ms": metric(m, "ms") for o, m in medians.items()},
               "copy_ms": metric(medians["hash"] / 4, "ms"), "hash_vs_copy": metric(4.0, "x"),
               "hash_bytes_per_nnz": metric(16.0, "B"),
               **{f"speedup_vs_{b}": metric(float(np.mean(round_speedups(rounds[b], rounds["hash"]))), "x")
                  for b in ("sort", "dp")}}
    return Record(paper="hbp", artifact="preprocessing", unit=unit, scale="quick", status="ok", config={}, seed=0,
                  metrics=metrics, data={"name": unit, "source": "test", "preprocessing_device": "cpu",
                                         preprocessing.ROUNDS: rounds})


def _preprocessing_records(rng) -> list[Record]:
    """Four matrices, one below ``min_nnz``; sort takes ~1.2x and DP ~1.5x hash's time, with 5% round noise."""
    records = []
    for unit, nnz in (("tiny", 100), ("a", 5_000), ("b", 50_000), ("c", 500_000)):
        hash_ms = nnz / 1e4 * (1 + 0.05 * rng.standard_normal(5))
        rounds = {"hash": hash_ms.tolist(), "sort": (1.2 * hash_ms * (1 + 0.05 * rng.standard_normal(5))).tolist(),
                  "dp": (1.5 * hash_ms * (1 + 0.05 * rng.standard_normal(5))).tolist()}
        records.append(_preprocessing_record(unit, nnz, rounds))
    return records


def test_preprocessing_claims_are_the_mean_over_matrices_of_each_matrix_rounds():
    ctx = Context("quick", resolve_config(preprocessing.ARTIFACT, "quick", None), 0, CPU)
    records = _preprocessing_records(np.random.default_rng(0))
    summary, verdicts = judge_records(preprocessing.ARTIFACT, records, ctx)
    for claim, baseline in preprocessing.CLAIMS.items():
        drawn = summary.samples[claim]
        assert drawn.statistic == "mean" and set(drawn.strata) == {"a", "b", "c"}  # "tiny" is below min_nnz
        assert drawn.strata["b"] == pytest.approx(round_speedups(records[2].data[preprocessing.ROUNDS][baseline],
                                                                 records[2].data[preprocessing.ROUNDS]["hash"]))
        expected = np.mean([records[i].value(f"speedup_vs_{baseline}") for i in (1, 2, 3)])
        assert summary.measured[claim] == pytest.approx(expected)
    assert {v.claim.id for v in verdicts} == set(preprocessing.CLAIMS)
    for verdict in verdicts:
        # ~1.2x and ~1.5x against 3.53x and 3.67x: the whole interval lies below 75% of the paper's value.
        assert verdict.status == "not reproduced" and verdict.samples == 5
        assert verdict.ci[0] <= verdict.measured <= verdict.ci[1]
        assert verdict.label == f"not reproduced {OTHER_DEVICE}"  # the paper measured on a GPU
    assert any("median coefficient of variation" in note for note in summary.notes)


def test_preprocessing_withholds_its_claims_when_rounds_measured_a_busy_machine():
    ctx = Context("quick", resolve_config(preprocessing.ARTIFACT, "quick", None), 0, CPU)
    records = _preprocessing_records(np.random.default_rng(2))
    records[1].data[preprocessing.ROUNDS]["hash"][2] *= 1000  # a 0.5 ms build stalled for half a second
    summary, verdicts = judge_records(preprocessing.ARTIFACT, records, ctx)
    for verdict in verdicts:  # 1 of the 3 judged matrices is more than a quarter
        assert verdict.status == "not judged" and verdict.note.startswith("timings unreliable: in 1 of 3 matrices")
    assert set(summary.samples["pre-vs-sort"].strata) == {"b", "c"}


def test_preprocessing_says_which_records_lack_rounds():
    ctx = Context("quick", resolve_config(preprocessing.ARTIFACT, "quick", None), 0, CPU)
    records = _preprocessing_records(np.random.default_rng(1))
    del records[1].data[preprocessing.ROUNDS]
    summary = preprocessing.summarize(records, ctx)
    assert set(summary.samples["pre-vs-sort"].strata) == {"b", "c"}
    assert any("1 matrices' records have no per-round times" in note for note in summary.notes)


def _spmv_record(unit: str, base_ms: list[float], hbp_ms: list[float]) -> Record:
    """The per-round times hbp/spmv keeps on a CUDA device (only what the claims read)."""
    rounds = {spmv.BASELINE["cuda"]: base_ms, spmv.HBP["cuda"]: hbp_ms}
    return Record(paper="hbp", artifact="spmv", unit=unit, scale="full", status="ok", config={}, seed=0,
                  data={spmv.ROUNDS: rounds})


def test_spmv_claims_are_the_max_over_matrices_of_each_matrix_rounds_on_a_gpu():
    records = [_spmv_record("a", [2.0, 2.2, 2.1, 2.0, 1.9], [1.0, 1.0, 1.0, 1.0, 1.0]),
               _spmv_record("b", [3.0, 3.3, 2.7, 3.0, 3.1], [1.0, 1.1, 0.9, 1.0, 1.0])]
    judged = spmv._claim_samples(records, "cuda")
    assert judged.withheld is None
    drawn = judged.samples
    assert drawn.statistic == "max" and set(drawn.strata) == {"a", "b"}
    assert drawn.point() == pytest.approx(np.mean([3.0, 3.0, 3.0, 3.0, 3.1]))
    low, high = drawn.interval()
    assert low < drawn.point() < high and high - low < 0.5


@pytest.mark.parametrize("artifact", [preprocessing.ARTIFACT, spmv.ARTIFACT], ids=lambda a: a.id)
def test_the_timed_artifacts_record_every_round_of_every_executor(artifact, tmp_path):
    """Both run their units one at a time (timed) and keep each round's time, as many rounds as the scale's
    ``repeats``, for the claims' intervals."""
    assert artifact.timed
    result = run_artifact(artifact, "smoke", describe_cpu("test"), out=tmp_path, progress=False)
    rounds_key = preprocessing.ROUNDS if artifact is preprocessing.ARTIFACT else spmv.ROUNDS
    repeats = result.context.config["repeats"]
    for record in result.records:
        rounds = record.data[rounds_key]
        assert rounds and all(len(times) == repeats and min(times) > 0 for times in rounds.values()), record.unit
