"""The GA pruning artifact: units per GA seed, the claims' samples, the learning floor, the conv timing."""

import pytest
import torch

from methods.pruning import LeNet5, full_masks
from reproduce.gaprune import lenet_mnist
from reproduce.harness.artifact import Context
from reproduce.harness.claims import load_claims
from reproduce.harness.device import describe_cpu
from reproduce.harness.records import Record, metric


def _context(scale="quick", **overrides):
    return Context(scale, {**lenet_mnist.ARTIFACT.scales[scale], **overrides}, 0, describe_cpu("test"))


def test_units_are_each_setting_per_ga_seed_with_baselines_on_the_first():
    units = lenet_mnist.units(_context())
    assert [u.id for u in units] == ["sparsity-s0", "computation-s0", "sparsity-s1", "computation-s1",
                                     "sparsity-s2", "computation-s2"]
    assert [u.params["baselines"] for u in units] == [True, True, False, False, False, False]


def _method_metrics(method, removed, flops, accuracy_after):
    return {f"{method}_param_reduction": metric(removed, "%"), f"{method}_conv_flop_speedup": metric(flops, "x"),
            f"{method}_conv_time_speedup": metric(1.2, "x"), f"{method}_conv_time_speedup_channels": metric(1.1, "x"),
            f"{method}_accuracy_after": metric(accuracy_after, "%"), f"{method}_computation": metric(1 / flops),
            f"{method}_validation_error": metric(100 - accuracy_after, "%"),
            f"{method}_layer_density": metric({"conv1": 0.5, "fc1": 0.1}), f"{method}_live_channels": metric([4, 9])}


def _record(setting, seed, removed, flops, ratios, accuracy_before=98.0):
    metrics = {"accuracy_before": metric(accuracy_before, "%"), "ga_best_fitness": metric([0.5, 0.3, 0.2]),
               "ga_population": metric([{"error": 0.03, "computation": 0.2, "parameters": 0.1},
                                        {"error": 0.05, "computation": 0.1, "parameters": 0.08}]),
               "ga_conv_time_ratios": metric(ratios, "x"), **_method_metrics("ga", removed, flops, 97.0)}
    if seed == 0:
        for method in lenet_mnist.METHODS[1:]:
            metrics.update(_method_metrics(method, removed, flops / 2, 96.0))
    return Record(paper="gaprune", artifact="lenet_mnist", unit=f"{setting}-s{seed}", scale="quick", status="ok",
                  config={}, seed=0, params={"setting": setting, "seed": seed, "baselines": seed == 0},
                  metrics=metrics)


def _records(accuracy_before=98.0):
    return [_record(setting, seed, removed, flops, [1.0 + seed / 10] * 5, accuracy_before)
            for seed, (removed, flops) in enumerate([(93.0, 10.0), (94.0, 12.0), (95.0, 14.0)])
            for setting in lenet_mnist.SETTINGS]


def test_each_claim_is_judged_on_the_ga_seeds():
    summary = lenet_mnist.summarize(_records(), _context())
    assert summary.measured == pytest.approx({"lenet-param-reduction": 94.0, "lenet-conv-flop-speedup": 12.0,
                                              "lenet-conv-time-speedup": 1.1})
    assert summary.samples["lenet-param-reduction"].strata == {"": [93.0, 94.0, 95.0]}
    timing = summary.samples["lenet-conv-time-speedup"]
    assert len(timing.strata) == 3 and timing.per_stratum == 5  # one stratum per GA seed, one sample per round
    assert summary.withheld == {}
    assert len(summary.table) == 2 * 3 + 2 * 2  # the GA per unit, the two baselines on the first seed's units
    assert any("cleared" in note for note in summary.notes)


def test_a_pretrained_network_below_the_floor_withholds_every_claim():
    summary = lenet_mnist.summarize(_records(accuracy_before=60.0), _context())
    assert set(summary.withheld) == {"lenet-param-reduction", "lenet-conv-flop-speedup", "lenet-conv-time-speedup"}
    assert all("60 < 95" in reason for reason in summary.withheld.values())


def test_the_removal_tolerance_is_on_the_kept_fraction():
    claim = {c.id: c for c in load_claims("gaprune")}["lenet-param-reduction"]
    low, _ = claim.bounds()
    assert 100 - low == pytest.approx(4.58 * 1.25)  # at most 25% more weights kept than the paper's 4.58%


def test_the_speed_up_is_two_claims_and_only_the_time_depends_on_the_device():
    claims = {c.id: c for c in load_claims("gaprune")}
    assert set(lenet_mnist.ARTIFACT.claims) == set(claims)
    assert claims["lenet-conv-time-speedup"].platform and not claims["lenet-conv-flop-speedup"].platform
    assert all(claim.why for claim in claims.values()) and lenet_mnist.ARTIFACT.timed


def test_conv_times_give_one_paired_ratio_per_interleaved_round():
    torch.manual_seed(0)
    dense = LeNet5().eval()
    masks = full_masks(dense)
    masks["conv2"] = torch.rand(masks["conv2"].shape) < 0.3
    metrics = lenet_mnist._conv_times(dense, {"ga": (LeNet5().eval(), masks)}, torch.randn(8, 1, 28, 28), 6)
    ratios = metrics["ga_conv_time_ratios"]["value"]
    assert len(ratios) == 6 and all(r > 0 for r in ratios)
    assert metrics["ga_conv_ms"]["value"] > 0 and metrics["dense_conv_ms"]["value"] > 0
