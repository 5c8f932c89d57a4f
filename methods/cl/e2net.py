"""E2Net: Resource-Efficient Continual Learning with Elastic Expansion Network (Liu et al., arXiv 2309.16117).

DER++ on an elastic working network (:class:`~methods.cl.elastic.ElasticResNet`) with the two
parts the abstract names, as docs/papers/e2net.md describes them (the authors'
``models/e2n.py`` and ``e2n_utils.py`` at HEAD a41677d; the paper's own equations were not
available to us):

- **Representative Network Distillation.** At the start of every task ``t >= 1``,
  :func:`search_representative` sorts the working network's channels, samples 500 subnets
  inside the elastic stage (:func:`stage_schedule`, :func:`sample_config`) and keeps the
  best-scoring one under 95% of the parameters; a frozen copy of it is the teacher, and
  each step adds ``0.05 * MSE(working net with that subnet active (x), teacher(x))``.
- **Subnet Constraint Experience Replay.** After each step the incoming batch enters the
  reservoir buffer only with probability ``exp(-0.75 * occupancy)`` of the representative
  subnet (1 in task 0).

Choices left open, or where we differ from the public code (ours; docs/papers/e2net.md):

- The search at the start of task ``t`` uses ``stage_schedule(N)[t - 1]``: the public loop
  calls ``self_search`` before ``set_stage(t)``, so the last stage value is never searched.
- "At least as large as the previous representative subnet" is a parameter count
  (``minimum_params``); the public code asks it of every block's expand ratio and every
  stage's width index separately.
- A stage beyond the number of choices allows all of them; the public code then samples
  the full network only, which never passes the 95% limit (on Seq-TinyImageNet's 10 tasks
  the stage reaches 20 > 19 choices by task 7).
- The probe is one fixed seeded Gaussian batch shaped like the observed inputs (the
  dataset's own side, 64 for Tiny-ImageNet) instead of a fresh ``32 x 3 x 32 x 32`` draw
  at every search: the public code's fixed 32 x 32 probe is a known defect (docs/papers/e2net.md).
- Batch norm: every subnet pass (the 501 probe passes of the search, the working net with
  the subnet active in the distillation term) normalises with batch statistics, as in the
  public code, but leaves the running statistics unchanged
  (:func:`frozen_running_statistics`); the public code lets them update the first channels'
  shared running statistics, which the full network then uses at test time. The teacher
  normalises with batch statistics too (the public copy stays in training mode); it keeps
  no running statistics (:func:`batch_statistics_only`). Measured on Seq-MNIST (5,000
  digits, buffer 200, width 8, one epoch, seed 0): a teacher normalised with running
  statistics dropped class-IL accuracy from 80.6% to 51.3%, and letting the subnet passes
  update them too, to 28.6%.
- The public code of an earlier commit (4530fbd) added the replay terms on a random 25% of
  the steps; HEAD, which we follow, adds them at every step as DER++ does.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import count_parameters
from methods.cl.derpp import DERPP
from methods.cl.elastic import ElasticResNet, SubnetConfig


def stage_schedule(n_tasks: int, r: float = 4) -> list[int]:
    """The elastic stage of each task (the public ``set_stage`` with ``r = 4``).

    ``stage_t = sum_{k <= t} p_k`` with ``p_k = round(r / 2 * (1 + cos(pi * k / (N - 1))))``
    (Python's half-to-even rounding, as the public code), raised to at least 1 for every
    task but the last: the subnet space grows fast at first and slowly later.

    Parameters
    ----------
    n_tasks : int
        ``N``; for ``N = 1`` the cosine's phase is 0.
    r : float

    Returns
    -------
    list of int
        Non-decreasing, one value per task; ``[4, 7, 9, 10, 10]`` for ``N = 5``.
    """
    stages, stage = [], 0
    for task in range(n_tasks):
        phase = math.pi * task / (n_tasks - 1) if n_tasks > 1 else 0.0
        step = round(r / 2 * (1 + math.cos(phase)))
        stage += step if task == n_tasks - 1 else max(step, 1)
        stages.append(stage)
    return stages


def sample_config(net: ElasticResNet, stage: int, generator: torch.Generator, minimum_params: int = 0,
                  max_tries: int = 100) -> SubnetConfig:
    """A random subnet inside the elastic stage, with at least ``minimum_params`` parameters.

    Each block's expand ratio is one of the ``stage`` smallest ratios and each stage's width
    index lies in ``[0, stage)``, both uniform and clamped to the available choices
    (``sample_active_subnet2``). Candidates below ``minimum_params`` are drawn again, at most
    ``max_tries`` times; then the largest subnet of the stage is returned, which is at least
    as large as any subnet of an earlier (smaller) stage.

    Parameters
    ----------
    net : ElasticResNet
    stage : int
        At least 1.
    generator : torch.Generator
        CPU generator of the draws.
    minimum_params : int
        The previous representative subnet's parameter count (0 for the first search).
    max_tries : int

    Raises
    ------
    ValueError
        If even the largest subnet of the stage has fewer than ``minimum_params`` parameters.
    """
    if stage < 1:
        raise ValueError(f"stage must be >= 1, got {stage}")
    n_expand, n_width = min(stage, len(net.expand_ratios)), min(stage, len(net.width_mults))
    for _ in range(max_tries):
        config = SubnetConfig(tuple(torch.randint(0, n_expand, (net.n_blocks,), generator=generator).tolist()),
                              tuple(torch.randint(0, n_width, (net.n_stages,), generator=generator).tolist()))
        if net.parameter_count(config) >= minimum_params:
            return config
    largest = SubnetConfig((n_expand - 1,) * net.n_blocks, (n_width - 1,) * net.n_stages)
    if net.parameter_count(largest) < minimum_params:
        raise ValueError(f"no subnet of stage {stage} has {minimum_params} parameters")
    return largest


@contextlib.contextmanager
def frozen_running_statistics(module: nn.Module):
    """Within the block, ``module``'s batch-norm layers in training mode normalise with batch
    statistics but leave their running statistics unchanged (momentum 0)."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def batch_statistics_only(module: nn.Module) -> nn.Module:
    """Make ``module``'s batch-norm layers normalise with batch statistics in every mode (no running statistics)."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.track_running_stats = False
            layer.running_mean = layer.running_var = layer.num_batches_tracked = None
    return module


def search_representative(net: ElasticResNet, probe: torch.Tensor, stage: int, generator: torch.Generator,
                          n_candidates: int = 500, top: int = 30, limit: float = 0.95,
                          minimum_params: int = 0, fallback: SubnetConfig | None = None
                          ) -> tuple[SubnetConfig, float, float]:
    """E2Net's representative subnet search (the public ``self_search``).

    1. Sort the working network's middle channels (:meth:`ElasticResNet.sort_channels`).
    2. Run the maximal network on the probe.
    3. Score ``n_candidates`` subnets from :func:`sample_config` by
       ``MSE(subnet(probe), maximal(probe)) * exp(-occupancy)``; lower is better.
    4. Walk the ``top`` best-scoring ones and keep the first with fewer than
       ``limit * full`` parameters.

    Fallback (ours; the public code finds no subnet there and fails later): if none of the
    ``top`` qualifies, the walk goes on past them with a ``RuntimeWarning``, i.e. the best
    scoring candidate under the limit is kept. If no candidate at all is under the limit
    (late tasks, when the previous subnet is close to the limit and every candidate must be
    at least as large), ``fallback`` (E2Net passes the previous representative subnet) is
    kept, scored on the probe like a candidate.

    Parameters
    ----------
    net : ElasticResNet
        Left sorted, in its training mode, with the maximal subnet active.
    probe : torch.Tensor
        ``(P, C, H, W)`` on the network's device.
    stage : int
    generator : torch.Generator
    n_candidates, top : int
    limit : float
        Fraction of the full parameter count a subnet must stay under.
    minimum_params : int
        See :func:`sample_config`.
    fallback : SubnetConfig, optional
        Kept when no candidate is under the limit.

    Returns
    -------
    config : SubnetConfig
    occupancy : float
        Its parameters / the full network's.
    score : float
        Its score (squared logit units).

    Raises
    ------
    ValueError
        If no candidate is under the limit and there is no fallback.
    """
    net.sort_channels()
    training = net.training
    configs, scores = [], []
    net.train()
    try:
        with torch.no_grad(), frozen_running_statistics(net):
            net.set_max()
            reference = net(probe)

            def score(config: SubnetConfig) -> float:
                net.set_active(config)
                return float(F.mse_loss(net(probe), reference)) * math.exp(-net.occupancy(config))

            for _ in range(n_candidates):
                configs.append(sample_config(net, stage, generator, minimum_params))
                scores.append(score(configs[-1]))
            order = sorted(range(len(configs)), key=scores.__getitem__)
            qualifying = [i for i in order if net.parameter_count(configs[i]) < limit * net.full_parameters]
            if not qualifying and fallback is not None:
                return fallback, net.occupancy(fallback), score(fallback)
    finally:
        net.set_max()
        net.train(training)
    if not qualifying:
        raise ValueError(f"none of {n_candidates} candidates of stage {stage} is under {limit:.0%} of the parameters")
    best = qualifying[0]
    if best not in order[:top]:
        warnings.warn(f"none of the {top} best subnets is under {limit:.0%} of the parameters; keeping the best one "
                      "that is", RuntimeWarning, stacklevel=2)
    return configs[best], net.occupancy(configs[best]), scores[best]


class E2Net(DERPP):
    """DER++ with representative network distillation and subnet-constrained replay.

    Parameters
    ----------
    net : PlainNet
        ``PlainNet(ElasticResNet(...), black)``; ``net.backbone`` is the elastic network.
    n_tasks : int
        Tasks in the stream, for :func:`stage_schedule`.
    alpha, beta : float
        DER++ weights (E2Net's best arguments equal DER++'s).
    subnet_weight : float
        Weight of the subnet distillation term (0.05, hard-coded in the public code).
    gate_rate : float
        The buffer gate is ``exp(-gate_rate * occupancy)`` (0.75).
    n_candidates, top : int
        Search size and walk length (500, 30).
    probe_size : int
        Images in the Gaussian probe (32), each shaped like the observed inputs: the
        dataset's own side, a deliberate fix of the public code's fixed 32 x 32 probe.
    probe_seed : int
        Seed of the probe's own generator: the probe is the same at every search.
    **kwargs
        As :class:`~methods.cl.er.Learner`.

    Attributes
    ----------
    teacher : SubnetResNet or None
        The frozen representative subnet (eval mode, no gradients, not in the optimizer).
    config : SubnetConfig or None
        Its configuration in the working network.
    occupancy : float
        Its parameters / the working network's (0 before the first search).
    score : float or None
        Its search score.
    """

    name = "e2net"

    def __init__(self, net, *, n_tasks: int, alpha: float, beta: float, subnet_weight: float = 0.05,
                 gate_rate: float = 0.75, n_candidates: int = 500, top: int = 30, probe_size: int = 32,
                 probe_seed: int = 0, **kwargs):
        if not isinstance(getattr(net, "backbone", None), ElasticResNet):
            raise TypeError("E2Net trains PlainNet(ElasticResNet(...), black)")
        super().__init__(net, alpha=alpha, beta=beta, **kwargs)
        self.stages = stage_schedule(n_tasks)
        self.subnet_weight = subnet_weight
        self.gate_rate = gate_rate
        self.n_candidates = n_candidates
        self.top = top
        self.probe_size = probe_size
        self.probe_seed = probe_seed
        self.input_shape: tuple[int, ...] | None = None
        self.teacher: nn.Module | None = None
        self.config: SubnetConfig | None = None
        self.occupancy = 0.0
        self.score: float | None = None

    def probe(self) -> torch.Tensor:
        """The fixed Gaussian probe ``(probe_size, C, H, W)``, shaped like the inputs observed so far."""
        if self.input_shape is None:
            raise RuntimeError("E2Net sizes its probe from the inputs: observe a batch before the search")
        generator = torch.Generator().manual_seed(self.probe_seed)
        return torch.randn((self.probe_size, *self.input_shape), generator=generator).to(self.net.black.device)

    def begin_task(self, task: int, classes: tuple[int, ...], n_epochs: int) -> None:
        """From task 1 on, search the representative subnet and freeze a copy of it as the teacher."""
        super().begin_task(task, classes, n_epochs)
        if task == 0:
            return
        backbone = self.net.backbone
        minimum = 0 if self.config is None else backbone.parameter_count(self.config)
        config, occupancy, score = search_representative(
            backbone, self.probe(), self.stages[task - 1], self.generator, self.n_candidates, self.top,
            minimum_params=minimum, fallback=self.config)
        self.teacher = batch_statistics_only(backbone.extract(config)).eval().requires_grad_(False)
        self.config, self.occupancy, self.score = config, occupancy, score

    def extra_loss(self, encoded: torch.Tensor) -> torch.Tensor | None:
        """``subnet_weight`` * :meth:`subnet_loss` from task 1 on; also sizes the probe from the inputs."""
        self.input_shape = tuple(encoded.shape[1:])
        return None if self.teacher is None else self.subnet_weight * self.subnet_loss(encoded)

    def subnet_loss(self, encoded: torch.Tensor) -> torch.Tensor:
        """``MSE(working net with the representative config active (x), teacher(x))``; max config after."""
        backbone = self.net.backbone
        with torch.no_grad():
            target = self.teacher(encoded)
        backbone.set_active(self.config)
        try:
            with frozen_running_statistics(backbone):
                output = self.net.classify(encoded)
        finally:
            backbone.set_max()
        return F.mse_loss(output, target)

    def admits(self) -> bool:
        """The Subnet Constraint Experience Replay gate: True with probability ``exp(-gate_rate * occupancy)``.

        Draws from ``self.generator`` only once a representative subnet exists.
        """
        if self.occupancy <= 0:
            return True
        return float(torch.rand((), generator=self.generator)) < math.exp(-self.gate_rate * self.occupancy)

    @property
    def teacher_parameter_count(self) -> int:
        """Parameters of the frozen teacher (0 before the first search)."""
        return 0 if self.teacher is None else count_parameters(self.teacher)

    def storage_bytes(self) -> int:
        """Bytes kept besides the working network: buffer examples + the teacher's parameters."""
        teacher = 0 if self.teacher is None else sum(t.numel() * t.element_size()
                                                     for t in self.teacher.state_dict().values())
        return super().storage_bytes() + teacher
