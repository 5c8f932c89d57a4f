"""The CL artifacts' summaries from per-seed records: samples paired by seed, learning floors, profiles.

The records are written by hand (no training), so each test states the per-seed values it expects.
"""

import numpy as np
import pytest

import reproduce.continual as runs
from reproduce.clfd import main_table as clfd_table
from reproduce.e2net import main_table as e2net_table
from reproduce.fdinet import efficiency
from reproduce.harness.artifact import Context
from reproduce.harness.claims import judge, load_claims
from reproduce.harness.device import describe_cpu
from reproduce.harness.records import Record, metric


def _record(paper, artifact, dataset, method, variant, seed, buffer=50, profile=None, **values):
    params = {"dataset": dataset, "method": method, "variant": variant, "buffer": buffer, "seed": seed}
    if profile:
        params["profile"] = profile
    defaults = {"class_il": 50.0, "task_il": 90.0, "forgetting_cil": 10.0, "bwt_cil": -10.0, "train_seconds": 10.0,
                "peak_memory_mb": 100.0, "parameters": 1000, "storage_bytes": 1000}
    metrics = {name: metric(value) for name, value in {**defaults, **values}.items()}
    return Record(paper=paper, artifact=artifact, unit=f"{profile or ''}{dataset}-{method}-{variant}-s{seed}",
                  scale="quick", status="ok", config={}, seed=0, params=params, metrics=metrics)


def _context(artifact, scale="quick"):
    return Context(scale, artifact.ARTIFACT.scales[scale], 0, describe_cpu("test"))


def test_paired_samples_pair_by_seed_per_stratum():
    records = [_record("p", "a", "cifar10-subset", method, variant, seed, train_seconds=seconds)
               for method, variant, seed, seconds in [
                   ("er", "plain", 0, 10.0), ("er", "plain", 1, 12.0), ("er", "clfd", 1, 4.0), ("er", "clfd", 0, 5.0),
                   ("derpp", "plain", 0, 30.0), ("derpp", "clfd", 0, 10.0)]]
    samples = runs.paired_samples(runs.seed_rows(records), "train_seconds", {"variant": "clfd"}, {"variant": "plain"},
                                  runs.times_smaller, ("dataset", "buffer", "method"), "max")
    assert samples.strata == {"cifar10-subset b50 derpp": [3.0], "cifar10-subset b50 er": [2.0, 3.0]}
    assert samples.point() == pytest.approx(3.0)


def test_reference_floor_withholds_below_and_reports_every_stratum():
    rows = runs.seed_rows([_record("p", "a", "mnist-offline", method, "plain", seed, class_il=value)
                           for method, seed, value in [("er", 0, 80.0), ("er", 1, 70.0), ("derpp", 0, 21.0),
                                                       ("derpp", 1, 25.0)]])
    assert runs.chance_floor("mnist-offline") == pytest.approx(30.0)
    withheld, report = runs.reference_floor(rows, {"variant": "plain"}, ("dataset", "buffer", "method"), "plain")
    assert "below the learning floor" in withheld and "23 < 30" in withheld and "mnist-offline b50 er" not in withheld
    assert "mnist-offline b50 er 75.0% (floor 30% = 1.5 x 20%)" in report and "derpp 23.0%" in report
    rows = rows[rows["method"] == "er"]
    assert runs.reference_floor(rows, {"variant": "plain"}, ("method",), "plain")[0] is None


def test_profiles_prefix_units_and_override_their_config():
    config = {"seeds": [0], "methods": ["er"], "buffer_free": (), "width": 64, "cpu_threads": 2,
              "profiles": {"timing": {"datasets": ["cifar10-subset"], "buffers": [50]},
                           "learning": {"datasets": ["mnist-offline"], "buffers": [200], "width": 8}}}
    units = runs.cl_units(config, ("plain", "fdinet"))
    assert [u.id for u in units] == ["timing-cifar10-subset-b50-plain-er-s0", "timing-cifar10-subset-b50-fdinet-er-s0",
                                     "learning-mnist-offline-b200-plain-er-s0",
                                     "learning-mnist-offline-b200-fdinet-er-s0"]
    assert runs.unit_config(config, units[2].params)["width"] == 8
    assert runs.unit_config(config, units[0].params)["width"] == 64


def test_shrunk_stream_scales_side_and_crop(images_dir, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_DIRS", str(images_dir))
    runs.load_stream.cache_clear()
    mnist = runs.load_stream("mnist-offline", False, 4, 2, 16)
    cifar = runs.load_stream("cifar10-subset", False, 2, 1, 16)
    runs.load_stream.cache_clear()
    assert mnist.train_x.shape == (40, 1, 16, 16) and mnist.spec.side == 16 and mnist.spec.crop_padding == 0
    # 28 x 28 digits pooled to 14 x 14 and padded with black (the normalised zero) by one pixel each side.
    assert np.allclose(mnist.train_x[:, :, 0, :].numpy(), runs.black_level(mnist.spec).item())
    assert cifar.train_x.shape == (20, 3, 16, 16) and cifar.spec.crop_padding == 2
    assert "2x2 average-pooled" in cifar.provenance["train"]["notes"]


def _clfd_records():
    records = []
    for seed in range(3):
        for method, speed in (("er", 3.0), ("derpp", 2.0 + 0.1 * seed)):
            records.append(_record("clfd", "main_table", "cifar10-subset", method, "plain", seed, class_il=19.0,
                                   train_seconds=speed * 10, peak_memory_mb=300.0))
            records.append(_record("clfd", "main_table", "cifar10-subset", method, "clfd", seed, class_il=21.0,
                                   train_seconds=10.0, peak_memory_mb=100.0 + seed))
    return records


def test_clfd_quick_summary_judges_time_and_memory_from_seeds():
    summary = clfd_table.summarize(_clfd_records(), _context(clfd_table))
    assert set(summary.samples) >= {"abs-time-gain", "mem-gain"}
    assert summary.samples["abs-time-gain"].strata["cifar10-subset b50 er"] == pytest.approx([3.0, 3.0, 3.0])
    assert summary.measured["abs-time-gain"] == pytest.approx(3.0)
    assert summary.measured["mem-gain"] == pytest.approx(np.mean([300 / 100, 300 / 101, 300 / 102]))
    # The plain models sit at 19% class-IL: the gains are shown as noise, not as a claim.
    assert any("below it, so these gains are noise" in note and "19.0% (floor 30%" in note for note in summary.notes)
    claims = {c.id: c for c in load_claims("clfd")}
    verdict = judge(claims["abs-time-gain"], summary.measured["abs-time-gain"], "quick",
                    samples=summary.samples["abs-time-gain"])
    assert verdict.status == "reproduced" and verdict.device_match is False


def test_clfd_full_summary_measures_only_declared_claims():
    records = [_record("clfd", "main_table", "seq-cifar10", method, "plain", seed, buffer=0)
               for method in ("sgd", "joint") for seed in range(3)]
    records += [_record("clfd", "main_table", "seq-cifar10", method, variant, seed)
                for method in clfd_table.METHODS for variant in ("plain", "clfd") for seed in range(3)]
    summary = clfd_table.summarize(records, _context(clfd_table, "full"))
    assert {"c10-nb-sgd-cil", "c10-nb-joint-til", "c10-b50-clfd-er-mem"} <= set(summary.measured)
    assert set(summary.measured) | set(summary.samples) <= set(clfd_table.ARTIFACT.claims)  # no buffer-free memory


def _e2net_records(derpp_class_il):
    records = []
    for seed, derpp in enumerate(derpp_class_il):
        for method, class_il, seconds, storage in (("er", 60.0, 10.0, 800), ("derpp", derpp, 20.0, 800),
                                                   ("e2net", derpp + 5.0, 30.0, 900)):
            records.append(_record("e2net", "main_table", "mnist-offline", method, "elastic", seed, buffer=200,
                                   class_il=class_il, train_seconds=seconds + seed, storage_bytes=storage))
    return records


def test_e2net_summary_withholds_learned_claims_below_the_floor():
    ctx = _context(e2net_table)
    summary = e2net_table.summarize(_e2net_records([25.0, 20.0, 27.0]), ctx)
    assert set(summary.withheld) == {"cil-gain-vs-derpp", "forgetting-cut-vs-derpp"}
    assert "24 < 30" in summary.withheld["cil-gain-vs-derpp"]
    assert summary.samples["cil-gain-vs-derpp"].strata == {"mnist-offline b200": [5.0, 5.0, 5.0]}
    assert summary.samples["time-ratio-vs-derpp"].strata["mnist-offline b200"] == pytest.approx([1.5, 31 / 21, 32 / 22])
    assert summary.samples["storage-ratio-vs-derpp"].point() == pytest.approx(900 / 800)
    cleared = e2net_table.summarize(_e2net_records([55.0, 60.0, 65.0]), ctx)
    assert cleared.withheld == {}
    assert cleared.samples["cil-gain-vs-er"].strata == {"mnist-offline b200": [0.0, 5.0, 10.0]}


def test_fdinet_summary_takes_each_claim_from_its_profile():
    records = []
    for seed in range(3):
        for variant, seconds, memory, parameters in (("plain", 80.0, 500.0, 11_173_962), ("fdinet", 10.0, 100.0,
                                                                                           2_463_376)):
            records.append(_record("fdinet", "efficiency", "cifar10-subset", "er", variant, seed, profile="timing",
                                   train_seconds=seconds + seed, peak_memory_mb=memory, parameters=parameters,
                                   class_il=10.0))
        for variant, class_il in (("plain", 80.0 + seed), ("fdinet", 70.0)):
            records.append(_record("fdinet", "efficiency", "mnist-offline", "er", variant, seed, buffer=200,
                                   profile="learning", class_il=class_il, train_seconds=5.0))
    summary = efficiency.summarize(records, _context(efficiency))
    assert summary.measured["backbone-params"] == pytest.approx(100 * (1 - 2_463_376 / 11_173_962))
    assert summary.samples["edge-speedup"].strata == {"cifar10-subset b50 er": pytest.approx([8.0, 81 / 11, 82 / 12])}
    assert summary.samples["peak-mem"].point() == pytest.approx(80.0)
    # The accuracy gain comes from the learning units only, whose plain models clear the floor.
    assert summary.samples["acc-gain-max"].strata == {"mnist-offline b200 er": [-10.0, -11.0, -12.0]}
    assert summary.withheld == {}
    claims = {c.id: c for c in load_claims("fdinet")}
    assert judge(claims["backbone-params"], summary.measured["backbone-params"], "quick",
                 samples=summary.samples["backbone-params"]).status == "reproduced"
    assert judge(claims["acc-gain-max"], summary.measured["acc-gain-max"], "quick",
                 samples=summary.samples["acc-gain-max"]).status == "not reproduced"


def test_runs_paired_by_seed_share_their_torch_seed():
    """Common random numbers: the methods and variants of one (dataset, buffer, seed) start from the same draws."""
    ctx = _context(efficiency)
    units = efficiency.units(ctx)
    seeds = {}
    for unit in units:
        key = (unit.params["profile"], unit.params["dataset"], unit.params["buffer"], unit.params["seed"])
        seeds.setdefault(key, set()).add(runs.unit_seed(ctx, unit.params))
    assert all(len(drawn) == 1 for drawn in seeds.values())
    assert len({next(iter(drawn)) for drawn in seeds.values()}) == len(seeds) == 6
