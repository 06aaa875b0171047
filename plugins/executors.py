"""Built-in executors: local (in this process), processes (a process per run), ray (a Ray task
per run). They honour the contract in `toolkit/sweep/jobs.py`; a third-party executor (a batch
scheduler, say) registers under the same kind.

    ablate run spec.toml                                  # local
    ablate run spec.toml --executor processes --jobs 4    # 4 runs at a time, cores shared out
    ablate run spec.toml --executor ray --address auto    # on a running Ray cluster
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from toolkit import hookimpl
from toolkit.data.encode import usable_cores
from toolkit.errors import ToolkitError, one_line
from toolkit.sweep.jobs import (
    RunJob,
    Sweep,
    check_devices_here,
    describe_exit,
    forwarded_env,
    plugin_modules,
    record_worker_death,
    run_job,
    with_peaks,
)
from toolkit.sweep.watchdog import Watchdog


@hookimpl
def register_components(register: Any) -> None:
    register(
        "executor",
        "local",
        LocalExecutor,
        description="one run after another in this process, with a live progress bar",
    )
    register(
        "executor",
        "processes",
        ProcessesExecutor,
        description="each run in a fresh process, `jobs` at a time (default: one per core), "
        "cores shared out; GPUs shared round-robin",
    )
    register(
        "executor",
        "ray",
        RayExecutor,
        description="each run a Ray task with the CPUs (train.threads) and GPU (train.device) "
        "it asks for; a local Ray instance, or a cluster at `address`",
    )


class LocalExecutor:
    """Runs train in this process, in order: today's sweep, and the one `torchrun` uses."""

    def prepare(self, jobs: Sequence[RunJob], plugins: Any) -> None:
        check_devices_here(jobs, "local")

    def execute(self, jobs: Sequence[RunJob], sweep: Sweep) -> Iterator[tuple[RunJob, dict]]:
        for job in jobs:
            sweep.display.start(job)
            yield job, run_job(job, sweep, sweep.display.progress(job))


class ProcessesExecutor:
    """A fresh process per run (spawned: no state inherited from this one), `jobs` at a time.
    Each run gets train.threads CPU threads if the spec says, else cores // jobs. When runs use
    CUDA, process slot i sees GPU i mod (number of GPUs) only."""

    def __init__(self, *, jobs: int | None = None) -> None:
        if jobs is not None and jobs < 1:
            raise ToolkitError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = jobs or usable_cores()
        self.modules: tuple[str, ...] = ()
        self.autoload = False

    def prepare(self, jobs: Sequence[RunJob], plugins: Any) -> None:
        check_devices_here(jobs, "processes")
        self.modules, self.autoload = plugin_modules(plugins, "processes")

    def execute(self, jobs: Sequence[RunJob], sweep: Sweep) -> Iterator[tuple[RunJob, dict]]:
        context = multiprocessing.get_context("spawn")
        share = max(1, usable_cores() // self.jobs)
        gpus = _visible_gpus() if any(_may_use_cuda(j.device) for j in jobs) else []
        # Threads first, then the peaks at those counts, measured before any worker starts.
        threaded = [replace(j, threads=j.cpus or share) for j in jobs]
        waiting = deque(with_peaks(threaded))
        free = list(range(min(self.jobs, len(jobs))))
        running: dict[Any, tuple[RunJob, Any, Any, int]] = {}
        sweep.display.concurrent()
        try:
            while waiting or running:
                while waiting and free:
                    slot = free.pop(0)
                    job = waiting.popleft()
                    job = replace(job, plugin_modules=self.modules, autoload=self.autoload)
                    env = forwarded_env()
                    if gpus and _may_use_cuda(job.device):
                        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
                    receive, send = context.Pipe(duplex=False)
                    process = context.Process(
                        target=_process_main,
                        args=(job, send, env, os.getpid()),
                        name=f"ablate {job.label}",
                    )
                    process.start()
                    send.close()  # the child holds the only writing end now
                    running[process.sentinel] = (job, process, receive, slot)
                    sweep.display.start(job)
                ready = multiprocessing.connection.wait(list(running), timeout=1.0)
                sweep.display.poll()
                for sentinel in ready:
                    job, process, receive, slot = running.pop(sentinel)
                    summary = _receive(receive)
                    process.join()
                    receive.close()
                    free.append(slot)
                    if summary is None:
                        summary = record_worker_death(job, describe_exit(process.exitcode))
                    yield job, summary
        finally:  # interrupted: stop the workers; their resume.pt lets the next sweep go on
            for _, process, _, _ in running.values():
                process.terminate()
            for _, process, receive, _ in running.values():
                process.join()
                receive.close()


def _process_main(job: RunJob, send: Any, env: dict[str, str], parent: int) -> None:
    _die_with(parent)
    os.environ.update(env)
    try:
        summary = run_job(job)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent reports it
        sys.exit(130)
    send.send(summary)
    send.close()


def _die_with(parent: int) -> None:
    """End this worker when the sweep's process ends, however it ends (SIGKILL included), so
    no orphan goes on writing a run folder that a rerun has taken over. Linux: the kernel sends
    SIGKILL on the parent's death (PR_SET_PDEATHSIG); a parent already gone is checked after.
    Elsewhere the worker is only stopped by the parent's normal exit."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no libc to ask: the parent's own exit still stops us
            return
    if os.getppid() != parent:  # the sweep died before the signal was asked for
        os._exit(1)


def _receive(connection: Any) -> dict[str, Any] | None:
    try:
        return connection.recv() if connection.poll() else None
    except (EOFError, OSError):
        return None


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _may_use_cuda(device: str) -> bool:
    return device == "auto" or device.startswith("cuda")


def _visible_gpus() -> list[str]:
    """GPU ids this process may hand out, respecting CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _check_cpus(jobs: Sequence[RunJob], cpus: float, local: bool = False) -> None:
    """Every run's CPUs (train.threads, 1 if unset) fit on a Ray node with `cpus` of them."""
    node = "a local Ray instance would have" if local else "the largest Ray node has"
    fix = "raise num_cpus if the machine has more" if local else "add bigger nodes"
    for job in jobs:
        if (need := job.cpus or 1) > cpus:
            raise ToolkitError(
                f"variant {job.run.variant!r} asks for {need} CPUs (train.threads) but {node} "
                f"{cpus:g}; lower train.threads or {fix}"
            )


class RayExecutor:
    """Each run is a Ray task reserving train.threads CPUs (1 if unset) and one GPU when its
    device is cuda (or auto on a cluster with GPUs). Without `address`, starts a local Ray
    instance (`num_cpus` caps it) and stops it at the end; with one (`auto`, `host:6379`,
    `ray://host:10001`) it joins that cluster. Run folders must be on a filesystem the workers
    share with this process (automatic on one machine)."""

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ToolkitError(
                "the ray executor needs Ray, which is not installed: "
                "pip install 'gpt-ablate[ray]' (or pip install ray)"
            ) from None
        if num_cpus is not None and (num_cpus < 1 or address):
            raise ToolkitError(
                "num_cpus sizes a local Ray instance: give a positive number, and no address"
            )
        self.ray = ray
        self.address, self.num_cpus = address, num_cpus
        self.started = False
        self.watchdog: Watchdog | None = None
        self.modules: tuple[str, ...] = ()
        self.autoload = False
        self.resources: dict[int, tuple[int, int]] = {}  # job index -> (cpus, gpus)
        self.env: dict[str, str] = {}
        self.one_machine = False  # every node is this machine: its peaks are the workers'

    def prepare(self, jobs: Sequence[RunJob], plugins: Any) -> None:
        self.modules, self.autoload = plugin_modules(plugins, "ray")
        if not self.address and not self.ray.is_initialized():
            # A local instance has this machine's CPUs (or num_cpus): a run that cannot fit is
            # refused before Ray takes seconds to start.
            _check_cpus(jobs, self.num_cpus or os.cpu_count() or 1, local=True)
        self._connect()
        try:
            self._plan(jobs)
        except BaseException:
            self._disconnect()
            raise

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return  # the caller's own ray.init(): use it as it is
        if self.address:
            _check_reachable(self.address)
        try:
            ray.init(
                address=self.address,
                num_cpus=self.num_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                configure_logging=True,
            )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"at {self.address!r}" if self.address else "locally"
            raise ToolkitError(
                f"cannot start or reach a Ray cluster {where} ({one_line(exc)}); "
                f"start one with `ray start --head` and pass --address auto, or leave "
                f"--address out for a local instance"
            ) from None
        self.started = True
        if not self.address:
            # Ray's own processes would outlive a driver killed outright: a watchdog ends them.
            self.watchdog = Watchdog.start()

    def _disconnect(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False
        if self.watchdog is not None:
            self.watchdog.release()
            self.watchdog = None

    def _plan(self, jobs: Sequence[RunJob]) -> None:
        """Resources per run, checked against the cluster's nodes: a task no node can hold
        would wait forever."""
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
        gpus = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
        _check_cpus(jobs, cpus)
        for job in jobs:
            want_gpu = job.device.startswith("cuda") or (job.device == "auto" and gpus > 0)
            need = job.cpus or 1
            if want_gpu and gpus < 1:
                raise ToolkitError(
                    f"variant {job.run.variant!r} asks for a GPU (train.device = "
                    f"{job.device!r}) but no Ray node has one; use train.device = 'auto' or "
                    f"'cpu', or add GPU nodes"
                )
            self.resources[job.index] = (need, 1 if want_gpu else 0)
        self.env = forwarded_env()
        here = self.ray.util.get_node_ip_address()
        if all(n.get("NodeManagerAddress") == here for n in nodes):
            # One machine: workers import what this process imports (spec plugins included).
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            self.one_machine = True

    def execute(self, jobs: Sequence[RunJob], sweep: Sweep) -> Iterator[tuple[RunJob, dict]]:
        ray = self.ray
        task = ray.remote(_ray_main)
        pending: dict[Any, RunJob] = {}
        threaded = [replace(j, threads=self.resources[j.index][0]) for j in jobs]
        # On one machine the peaks are measured here, before any task starts; a cluster's
        # workers measure their own node's.
        try:
            for job in with_peaks(threaded) if self.one_machine else threaded:
                cpus, gpus = self.resources[job.index]
                job = replace(job, plugin_modules=self.modules, autoload=self.autoload)
                ref = task.options(
                    num_cpus=cpus,
                    num_gpus=gpus,
                    max_retries=0,  # a crashed run is reported, not silently trained again
                    name=f"ablate {job.run.variant} seed={job.run.seed}",
                    runtime_env={"env_vars": self.env},
                ).remote(job)
                pending[ref] = job
                sweep.display.queue(job)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                sweep.display.poll()
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        summary = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        how = f"failed in Ray ({type(exc).__name__}: {first})"
                        summary = record_worker_death(job, how)
                    yield job, summary
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            self._disconnect()


def _check_reachable(address: str) -> None:
    """Fail at once on a HOST:PORT nobody listens at: Ray itself retries for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms: Ray finds the cluster, or says it found none
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ToolkitError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); check the address "
            f"(`ray status` on the head node), or leave --address out for a local instance"
        ) from None


def _ray_main(job: RunJob) -> dict[str, Any]:
    return run_job(job)
