"""The eTag tables map their rows and claims (tests/harness/test_claims.py checks that every claim belongs to one
artifact)."""

from reproduce.etag import runs, table_b2, table_c1, table_c5
from reproduce.harness.runner import discover


def _etag_artifacts():
    return {name: artifact for name, artifact in discover().items() if artifact.paper == "etag"}


def test_table_b2_maps_every_row_and_its_copied_number():
    rows = {method for _, method in table_b2.TABLE_CLAIMS}
    assert rows == {"etag", "il2a", "rdfcil", "ssre", "fetril"}
    assert len(table_b2.TABLE_CLAIMS) == 5 * 6 and len(table_b2.PUBLISHED) == 4 * 6
    assert table_b2.TABLE_CLAIMS["cifar100 50+10", "fetril"] == "b2-c100-10-fetril"
    assert table_b2.PUBLISHED["tinyimg 100+20", "il2a"] == "b2-tin-20-il2a-pub"


def test_every_ablation_row_is_a_registered_etag_variant():
    for method in [*(m for _, m in table_c1.CELLS), *table_c5.CLAIMS["train_seconds"]]:
        assert runs.METHODS[method].build is runs.METHODS["etag"].build, method
    switches = {name: dict(runs.METHODS[name].switches) for name in ("b0", "b1", "b2", "b3", "b4")}
    # Table C.1: GE task-oriented (default) / naive, KD embedding (default) / naive, SS rotation (default) / none.
    assert switches == {
        "b0": {"self_supervision": "none"},
        "b1": {"generation": "naive", "distillation": "logit", "self_supervision": "none"},
        "b2": {"distillation": "logit", "self_supervision": "none"},
        "b3": {"generation": "naive"},
        "b4": {"generation": "naive", "self_supervision": "none"},
    }
