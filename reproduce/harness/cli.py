"""The ``repro`` command, and the ``main`` of every reproduction script.

    repro list                       artifacts, their claims, what each scale needs
    repro run TARGET [--scale ...]   run an artifact (paper/name), a paper, or all
    repro report                     build reports/index.html from results/
    repro compare RESULTS_A RESULTS_B  per-unit ratios B / A of each metric, two commits or machines
    repro fetch TARGET --scale full  download what a scale needs, ahead of time
    repro env                        the device and environment a record would store, and the devices here

``python reproduce/<paper>/<name>.py [options]`` is ``repro run <paper>/<name> [options]``.
``--set key=value`` (repeatable) overrides one key of the scale's config on any artifact
(:mod:`reproduce.harness.overrides`).
Expected failures (missing data, no network, a bad device) print one ``error:`` line and
exit with status 2; a run with failed units exits with status 1 after its summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from reproduce.harness.artifact import SCALES, Artifact, Context
from reproduce.harness.errors import EXPECTED_ERRORS, ReproError
from reproduce.harness.executors import EXECUTORS, SUBMITIT_DEFAULTS

EXIT_FAILED_UNITS, EXIT_ERROR = 1, 2
DEVICE_HELP = ("auto (a CUDA GPU if CuPy or torch sees one, else the CPU), cpu, cuda, cuda:N, or cuda-emu: the "
               "emulated CUDA device, which runs the CUDA kernels on the CPU for correctness and memory traffic "
               "(never chosen by auto; only the artifacts that declare it run there, and its times are not judged)")


def _common_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", choices=SCALES, default="quick",
                        help="smoke: seconds, synthetic data; quick: minutes on a CPU, offline data "
                             "(default); full: the paper's protocol, downloads and usually a GPU")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--seed", type=int, default=0, help="base seed; each unit derives its own (default 0)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where records go (default results/)")
    parser.add_argument("--force", action="store_true", help="rerun units already recorded with this config")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key of the scale's config, repeatable; nested keys with dots "
                             "(ga.population=16); the value is read as the type of the one it replaces (lists as "
                             "JSON or comma-separated: seeds=0,1; null for None); it is part of the config hash, so "
                             "its records never mix with those of other configs")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    where = parser.add_argument_group("where units run (records are one file per unit, so runs merge and resume)")
    where.add_argument("--executor", choices=EXECUTORS, default="inline",
                       help="inline: one unit after another in this process (default); local: worker processes "
                            "on this machine, one per GPU of the run's model or --workers on the CPU; submitit: "
                            "a job array through submitit (Slurm where sbatch exists, else submitit's local executor)")
    where.add_argument("--workers", type=int, metavar="N",
                       help="with --executor local: units at once (default: one per GPU, or the CPU cores; "
                            "CPU workers share the cores, so artifacts whose claims rest on times or memory run their "
                            "units one at a time all the same)")
    where.add_argument("--shard", type=_shard, metavar="I/N",
                       help="run only the I-th of N disjoint parts of the sweep (1 <= I <= N); a unit's part "
                            "depends on its id alone, so N runs on N machines cover every unit exactly once")
    where.add_argument("--submitit-cluster", choices=("slurm", "local", "debug"),
                       help="with --executor submitit: the backend (default: submitit's choice)")
    where.add_argument("--submitit-folder", type=Path, metavar="DIR",
                       help="with --executor submitit: job pickles and logs (default: OUT/.submitit)")
    where.add_argument("--submitit-param", action="append", default=[], metavar="KEY=VALUE",
                       help="with --executor submitit: a parameter of submitit's AutoExecutor, repeatable "
                            "(timeout_min=120, gpus_per_node=1, slurm_partition=gpu, ...; timeout_min defaults to "
                            f"{SUBMITIT_DEFAULTS['timeout_min']})")


def _shard(text: str):
    from reproduce.harness.runner import Shard

    try:
        return Shard.parse(text)
    except ReproError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _executor(args: argparse.Namespace, device):
    """The executor ``--executor`` and its options name, for ``device``."""
    from reproduce.harness import executors

    if args.executor == "local":
        return executors.local_executor(device.kind, device.name, args.workers)
    if args.executor == "submitit":
        folder = args.submitit_folder or Path(args.out) / ".submitit"
        return executors.SubmititExecutor(folder=folder, cluster=args.submitit_cluster,
                                          parameters=executors.parse_parameters(args.submitit_param),
                                          announce=lambda line: print(line, file=sys.stderr))
    return executors.InlineExecutor()


def _artifact_options(parser: argparse.ArgumentParser, artifact: Artifact) -> None:
    group = parser.add_argument_group(f"options of {artifact.id}")
    for flag, kwargs in artifact.options.items():
        group.add_argument(flag, **kwargs)


def _overrides(args: argparse.Namespace, artifact: Artifact) -> dict:
    return {name: getattr(args, name) for name in artifact.option_keys() if getattr(args, name, None) is not None}


def _run(artifacts: list[Artifact], args: argparse.Namespace) -> int:
    from reproduce.harness.console import Tally, format_run
    from reproduce.harness.device import select_device
    from reproduce.harness.runner import resolve_config, run_artifact

    device = select_device(args.device)
    print(f"device: {device.tag} ({device.name}); {device.reason}", file=sys.stderr)
    artifacts = _runnable(artifacts, device.kind)
    executor = _executor(args, device)
    for artifact in artifacts:  # a bad --set fails before any unit runs
        if args.scale in artifact.scales:
            resolve_config(artifact, args.scale, _overrides(args, artifact), args.settings)
    status, walls, verdicts = 0, {}, []
    for artifact in artifacts:
        if args.scale not in artifact.scales:
            print(f"{artifact.id}: no {args.scale} scale, skipped", file=sys.stderr)
            continue
        clock = time.perf_counter()
        result = run_artifact(artifact, args.scale, device, seed=args.seed, out=args.out, force=args.force,
                              overrides=_overrides(args, artifact), settings=args.settings, progress=args.progress,
                              executor=executor, shard=args.shard)
        walls[artifact.id] = time.perf_counter() - clock
        verdicts += result.verdicts
        print(format_run(result) + f"wall time: {_minutes(walls[artifact.id])}\n")
        failed = any(r.status == "failed" and r.unit in result.share for r in result.records)
        status = max(status, EXIT_FAILED_UNITS if failed else 0)
    if len(walls) > 1:
        width = max(map(len, walls))
        print("wall time per artifact:\n" + "\n".join(f"  {name:<{width}}  {_minutes(s)}" for name, s in walls.items())
              + f"\n  {'total':<{width}}  {_minutes(sum(walls.values()))}")
        print(f"verdicts over all artifacts: {Tally.of(verdicts).text()}")
    return status


def _minutes(seconds: float) -> str:
    """``seconds`` as ``12 min 05 s`` (or ``5.2 s`` under a minute)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _runnable(artifacts: list[Artifact], device_kind: str) -> list[Artifact]:
    """The artifacts of a run that support ``device_kind`` (:attr:`Artifact.devices`).

    The others are skipped with one line saying so; if none is left, ReproError names the
    artifacts that do run there.
    """
    from reproduce.harness.runner import discover

    runnable = [artifact for artifact in artifacts if artifact.runs_on(device_kind)]
    if runnable == artifacts:
        return artifacts
    supported = ", ".join(a.id for a in discover().values() if a.runs_on(device_kind)) or "none"
    left_out = [artifact.id for artifact in artifacts if not artifact.runs_on(device_kind)]
    if not runnable:
        raise ReproError(f"{', '.join(left_out)} {'does' if len(left_out) == 1 else 'do'} not run on --device "
                         f"{device_kind}; the artifacts that do: {supported}")
    print(f"skipped, not supported on --device {device_kind}: {', '.join(left_out)} (the artifacts that run there: "
          f"{supported})", file=sys.stderr)
    return runnable


def _list(artifacts: dict[str, Artifact]) -> int:
    from reproduce.harness.console import format_listing

    print(format_listing(artifacts))
    return 0


def _fetch(artifacts: list[Artifact], args: argparse.Namespace) -> int:
    from reproduce.harness.device import select_device
    from reproduce.harness.runner import resolve_config

    device = select_device("cpu")
    for artifact in artifacts:
        if artifact.fetch is None or args.scale not in artifact.scales:
            print(f"{artifact.id}: nothing to fetch at {args.scale} scale")
            continue
        ctx = Context(scale=args.scale, config=resolve_config(artifact, args.scale), seed=0, device=device)
        for line in artifact.fetch(ctx):
            print(f"{artifact.id}: {line}")
    return 0


def _env(args: argparse.Namespace) -> int:
    from reproduce.harness.device import available_devices, cpu_bandwidth, select_device
    from reproduce.harness.environment import environment
    from reproduce.harness.runner import discover

    device = select_device(args.device)
    devices = available_devices()
    artifacts = discover().values()
    for entry in devices:
        kind = entry["device"].partition(":")[0]
        entry["artifacts"] = "all" if all(a.runs_on(kind) for a in artifacts) else [
            a.id for a in artifacts if a.runs_on(kind)]
    info = {"device": device.to_json(), "available_devices": devices, "environment": environment()}
    if args.bandwidth:
        info["cpu_bandwidth"] = cpu_bandwidth()
    print(json.dumps(info, indent=2))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from reproduce.harness.compare import compare_results, format_comparison, plot_comparison

    comparison = compare_results(args.results_a, args.results_b, metric=args.metric, target=args.target)
    print(format_comparison(comparison, top=args.top))
    if args.plot is not None:
        print(f"plot: {plot_comparison(comparison, args.plot)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from reproduce.harness.report import build_report

    index = build_report(args.results, args.reports)
    print(f"report: {index.resolve().as_uri()}")
    return 0


def build_parser(artifact: Artifact | None = None) -> argparse.ArgumentParser:
    """The ``repro`` parser; with ``artifact``, also that artifact's own options on ``run``."""
    parser = argparse.ArgumentParser(prog="repro", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="artifacts, their claims, and what each scale needs")
    run = commands.add_parser("run", help="run an artifact (paper/name), a paper, or all")
    run.add_argument("target", help="paper/name (e.g. hbp/correctness), a paper (hbp), or all")
    _common_run_options(run)
    if artifact is not None:
        _artifact_options(run, artifact)
    report = commands.add_parser("report", help="build reports/index.html from results/")
    report.add_argument("--results", type=Path, default=Path("results"), help="records folder (default results/)")
    report.add_argument("--reports", type=Path, default=Path("reports"), help="output folder (default reports/)")
    compare = commands.add_parser(
        "compare", help="per-unit ratios B / A of each metric between two results folders",
        description="Match the ok records of two results folders (two commits, two machines) by paper, artifact, "
                    "scale and unit, and print per metric the geometric mean of the ratios B / A and the units "
                    "furthest from 1 in either direction.")
    compare.add_argument("results_a", type=Path, metavar="RESULTS_A", help="the reference results folder")
    compare.add_argument("results_b", type=Path, metavar="RESULTS_B", help="the results folder compared with it")
    compare.add_argument("--metric", help="only this metric (default: every numeric metric both records have)")
    compare.add_argument("--target", metavar="TARGET", help="only an artifact (paper/name) or a paper")
    compare.add_argument("--top", type=int, default=5, help="extreme units shown per metric (default 5)")
    compare.add_argument("--plot", type=Path, metavar="OUT.png", help="also plot the ratios into this PNG")
    fetch = commands.add_parser("fetch", help="download what a scale needs, ahead of time")
    fetch.add_argument("target", help="paper/name, a paper, or all")
    fetch.add_argument("--scale", choices=SCALES, default="full", help="scale to fetch for (default full)")
    env = commands.add_parser("env", help="the device and environment a record would store, and the devices this "
                                          "machine offers, as JSON")
    env.add_argument("--device", default="auto", help=DEVICE_HELP)
    env.add_argument("--bandwidth", action="store_true", help="also measure (once, then cached) CPU bandwidth")
    return parser


def _single_artifact(argv: list[str], artifacts: dict[str, Artifact]) -> Artifact | None:
    """The artifact ``repro run TARGET`` names, when TARGET is exactly one artifact."""
    if len(argv) >= 2 and argv[0] == "run":
        return artifacts.get(argv[1])
    return None


def _guarded(action) -> int:
    """Run ``action()``; expected failures become one ``error:`` line, not a traceback."""
    try:
        return action()
    except EXPECTED_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: records written so far are kept; rerun to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``repro list | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _dispatch(argv: list[str]) -> int:
    from reproduce.harness.runner import discover, select

    artifacts = discover()
    args = build_parser(_single_artifact(argv, artifacts)).parse_args(argv)
    if args.command == "list":
        return _list(artifacts)
    if args.command == "run":
        return _run(select(args.target, artifacts), args)
    if args.command == "fetch":
        return _fetch(select(args.target, artifacts), args)
    if args.command == "env":
        return _env(args)
    if args.command == "compare":
        return _compare(args)
    return _report(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``repro``; returns the exit status."""
    return _guarded(lambda: _dispatch(sys.argv[1:] if argv is None else argv))


def script_main(artifact: Artifact, argv: list[str] | None = None) -> int:
    """``python reproduce/<paper>/<name>.py [options]``: runs that one artifact."""
    parser = argparse.ArgumentParser(prog=f"reproduce/{artifact.paper}/{artifact.name}.py",
                                     description=f"{artifact.title} ({artifact.id}).")
    _common_run_options(parser)
    _artifact_options(parser, artifact)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return _guarded(lambda: _run([artifact], args))
