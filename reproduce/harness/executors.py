"""Where the units of a sweep run: in this process, in local worker processes, or as cluster jobs.

An executor takes a *task* (a picklable callable that runs one unit and writes its record,
:class:`reproduce.harness.runner.UnitTask`) and the units still to do, and yields
``(unit, status)`` as each unit finishes, in whatever order they finish. Records are one
file per unit, written atomically by whoever runs the unit, so results from many
processes or jobs merge by themselves and a rerun resumes where any of them stopped.

- :class:`InlineExecutor` (``--executor inline``, the default): one unit after another in
  this process, as the runner always did.
- :class:`LocalExecutor` (``--executor local``): persistent worker processes on this
  machine, started with ``spawn`` (safe with CUDA). On a GPU run, one worker per visible
  GPU of the chosen model, each bound to its GPU; on the CPU, ``--workers N`` workers that
  share the cores (each gets ``cores // N`` threads). A worker that dies in the middle of a
  unit (killed, out of memory, a segfault in a kernel) costs only that unit: it is
  recorded as failed with the reason, a new worker takes its place, and the sweep goes on.
- :class:`SubmititExecutor` (``--executor submitit``): the units as one job array through
  submitit (Slurm where ``sbatch`` exists, else submitit's local executor), one unit per
  array task. This command waits for the jobs and records a job that ended without a
  result as a failed unit; if the command itself stops, the submitted jobs go on and write
  their records, which the next run reuses.

In every case a unit that *raises* is recorded as failed by the task itself; the executor
only has to account for units whose process or job vanished without writing a record.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Protocol

from reproduce.harness.artifact import Unit
from reproduce.harness.errors import ReproError

EXECUTORS = ("inline", "local", "submitit")
# Set to a worker's thread share; REPRO_CUDA_EMU_WORKERS: the emulated CUDA device's threads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "REPRO_CUDA_EMU_WORKERS")
SUBMITIT_DEFAULTS = {"timeout_min": 60}


class Task(Protocol):
    """What an executor runs: :class:`reproduce.harness.runner.UnitTask`."""

    def __call__(self, unit: Unit) -> str:
        """Run ``unit``, write its record, return its status."""

    def lost(self, unit: Unit, reason: str) -> str:
        """Record ``unit`` as failed because its process or job ended without a record."""

    def on_device(self, index: int) -> Task:
        """The same task bound to CUDA device ``index``."""


class Executor(Protocol):
    """Runs units of a task; yields ``(unit, status)`` as each one finishes."""

    def run(self, task: Task, units: Sequence[Unit]) -> Iterator[tuple[Unit, str]]: ...


class InlineExecutor:
    """Every unit in this process, in order (the default)."""

    def run(self, task: Task, units: Sequence[Unit]) -> Iterator[tuple[Unit, str]]:
        for unit in units:
            yield unit, task(unit)


def _worker(connection, payload: bytes, gpu: int | None, threads: int | None) -> None:
    """A worker process: receives units over ``connection``, runs each, sends back its status.

    The task arrives pickled so that the thread limits are in the environment before its
    modules (numba, torch, BLAS) are imported. ``None`` ends the worker.
    """
    if threads:
        for variable in THREAD_VARIABLES:
            os.environ[variable] = str(threads)
    task = pickle.loads(payload)
    if gpu is not None:
        task = task.on_device(gpu)
    while (unit := connection.recv()) is not None:
        connection.send(task(unit))


@dataclass
class _Worker:
    process: multiprocessing.Process
    connection: object
    gpu: int | None
    unit: Unit | None = None


@dataclass
class LocalExecutor:
    """Units in ``workers`` spawned processes on this machine; see the module docstring.

    Parameters
    ----------
    workers : int
        How many units run at once.
    gpus : sequence of int, optional
        CUDA device indices; worker ``i`` uses ``gpus[i % len(gpus)]``. Empty for the CPU.
    threads : int, optional
        Threads per worker (OpenMP, numba, BLAS); None leaves the environment's setting.
    """

    workers: int
    gpus: Sequence[int] = ()
    threads: int | None = None
    context: multiprocessing.context.BaseContext = field(default_factory=lambda: multiprocessing.get_context("spawn"))

    def __post_init__(self):
        if self.workers < 1:
            raise ReproError(f"--workers must be at least 1, not {self.workers}")

    @property
    def shares_cores(self) -> bool:
        """Whether units run at once on the same CPU cores (so that times measured in them overlap)."""
        return not self.gpus and self.workers > 1

    def _start(self, payload: bytes, slot: int) -> _Worker:
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child, payload, gpu, self.threads), daemon=True,
                                       name=f"repro-worker-{slot}")
        process.start()
        child.close()
        return _Worker(process, parent, gpu)

    def run(self, task: Task, units: Sequence[Unit]) -> Iterator[tuple[Unit, str]]:
        todo = deque(units)
        if not todo:
            return
        payload = pickle.dumps(task)
        pool = [self._start(payload, slot) for slot in range(min(self.workers, len(todo)))]
        try:
            for worker in pool:
                worker.unit = todo.popleft()
                worker.connection.send(worker.unit)
            while any(worker.unit is not None for worker in pool):
                busy = [worker for worker in pool if worker.unit is not None]
                ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy])
                for slot, worker in enumerate(pool):
                    if worker.unit is None or not ({worker.connection, worker.process.sentinel} & set(ready)):
                        continue
                    unit, status = worker.unit, self._collect(task, worker)
                    worker.unit = None
                    yield unit, status
                    if not worker.process.is_alive():
                        worker.connection.close()
                        pool[slot] = worker = self._start(payload, slot)
                    if todo:
                        worker.unit = todo.popleft()
                        worker.connection.send(worker.unit)
        finally:
            self._stop(pool)

    @staticmethod
    def _collect(task: Task, worker: _Worker) -> str:
        """The status a worker sent for its unit, or a failed record if the worker died first."""
        try:
            if worker.connection.poll():
                return worker.connection.recv()
        except (EOFError, OSError):
            pass
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        where = f" on cuda:{worker.gpu}" if worker.gpu is not None else ""
        return task.lost(worker.unit, f"the worker process running this unit{where} {how} before it wrote a record")

    @staticmethod
    def _stop(pool: list[_Worker]) -> None:
        """End every worker: politely when idle, by terminate when still busy (Ctrl-C, an error)."""
        for worker in pool:
            if worker.process.is_alive() and worker.unit is None:
                try:
                    worker.connection.send(None)
                except OSError:
                    pass
        for worker in pool:
            worker.process.join(timeout=10 if worker.unit is None else 0)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=10)
            worker.connection.close()


@dataclass
class SubmititExecutor:
    """Units as a submitit job array; see the module docstring.

    Parameters
    ----------
    folder : Path
        Where submitit keeps its pickles and each job's stdout/stderr.
    cluster : str, optional
        ``slurm``, ``local`` or ``debug``; None lets submitit choose (Slurm when ``sbatch``
        is found, else local).
    parameters : dict
        Passed to ``AutoExecutor.update_parameters`` (``timeout_min``, ``gpus_per_node``,
        ``slurm_partition``, ...), over :data:`SUBMITIT_DEFAULTS`.
    poll_s : float, optional
        Seconds between checks of the jobs' states (default: 1 locally, 15 on a cluster).
    announce : callable(str), optional
        Called with one line once the array is submitted.
    """

    folder: Path
    cluster: str | None = None
    parameters: dict = field(default_factory=dict)
    poll_s: float | None = None
    announce: Callable[[str], None] | None = None

    def run(self, task: Task, units: Sequence[Unit]) -> Iterator[tuple[Unit, str]]:
        if not units:
            return
        submitit = _import_submitit()
        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        try:
            executor.update_parameters(**{**SUBMITIT_DEFAULTS, **self.parameters})
        except (TypeError, ValueError) as error:
            raise ReproError(f"--submitit-param: {error}") from None
        jobs = executor.map_array(task, list(units))
        if self.announce is not None:
            first = jobs[0].job_id.split("_")[0]
            self.announce(f"submitted {len(jobs)} units to {executor.cluster} (job {first}); logs in {self.folder}; "
                          "if this command stops, the jobs go on writing their records and a rerun reuses them")
        unit_of = {id(job): unit for job, unit in zip(jobs, units, strict=True)}
        poll = self.poll_s if self.poll_s is not None else (1.0 if executor.cluster in ("local", "debug") else 15.0)
        for job in submitit.helpers.as_completed(jobs, poll_frequency=poll):
            unit = unit_of[id(job)]
            try:
                status = job.result()
            except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as error:
                reason = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
                status = task.lost(unit, f"job {job.job_id} ended without a result: {reason} "
                                         f"(its log: {job.paths.stderr})")
            yield unit, status


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise ReproError("--executor submitit needs the submitit package: pip install 'repro-suite[cluster]' "
                         "(or pip install submitit)") from None
    return submitit


def parse_parameters(pairs: Sequence[str]) -> dict:
    """``KEY=VALUE`` strings as a dict; values that read as ints or floats become numbers."""
    parameters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ReproError(f"--submitit-param takes KEY=VALUE (e.g. timeout_min=120), not {pair!r}")
        for convert in (int, float):
            try:
                value = convert(value)
                break
            except ValueError:
                continue
        parameters[key] = value
    return parameters


def local_executor(device_kind: str, device_name: str, workers: int | None) -> LocalExecutor:
    """A :class:`LocalExecutor` for the run's device.

    On CUDA: every visible GPU of the run's model (``device_name``), one worker each
    unless ``workers`` says otherwise. On the CPU and the emulated CUDA device (which runs on
    the CPU): ``workers`` (default: the usable cores) workers sharing the cores, each with
    ``cores // workers`` threads.
    """
    if device_kind == "cuda":
        from reproduce.harness.device import cuda_device_count, describe_cuda

        gpus = [i for i in range(cuda_device_count()) if describe_cuda(i, "").name == device_name]
        return LocalExecutor(workers=workers or len(gpus), gpus=gpus)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = workers or cores
    return LocalExecutor(workers=count, threads=max(1, cores // count))
