"""Run a parameter-server job on this machine: one process supervisor for ``tools/launch_local.py`` and tests.

:func:`launch_local` starts a scheduler, servers and workers that all run the same command, over loopback
only, prefixes their output, and stops every process (and whatever it forked) when one fails, on Ctrl-C,
on SIGTERM or after a timeout. It needs no MXNet itself: the command it starts does the training.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, TextIO

from .cpu_threads import threads_per_process
from .errors import UserError

__all__ = ["LOOPBACK_ENV", "launch_local"]

#: Environment every process of a :func:`launch_local` job gets: the parameter server talks over loopback only.
LOOPBACK_ENV = {"DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_NODE_HOST": "127.0.0.1", "DMLC_INTERFACE": "lo"}


def free_loopback_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the launcher dies (Linux), so no process outlives a killed launcher."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _stop_process_groups(procs: Dict[str, subprocess.Popen], grace_s: float = 5.0) -> None:
    """SIGTERM every child's process group (the child and what it forked), then SIGKILL what is left.

    The SIGKILL round always runs: a leader that exited may have left forked helpers (data-loader processes).
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace_s
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))


def _pump(name: str, stream, output: TextIO, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        with lock:
            output.write(f"[{name}] {line}\n")
            output.flush()
    stream.close()


def launch_local(command: Sequence[str], num_workers: int, num_servers: int = 1,
                 timeout: Optional[float] = None, env: Optional[Dict[str, str]] = None,
                 kill_on_failure: bool = True, output: Optional[TextIO] = None,
                 server_grace_s: float = 30.0) -> int:
    """Run a parameter-server job on this machine, over loopback only; returns the job's exit status.

    Starts one scheduler, ``num_servers`` servers and ``num_workers`` workers, each running ``command``
    (servers and the scheduler exit inside ``import mxnet``) with ``DMLC_ROLE`` etc. set and every address
    pinned to 127.0.0.1 / ``lo`` (:data:`LOOPBACK_ENV`, applied after ``env`` so nothing can override it).
    Output lines are prefixed with ``[worker 0]``, ``[server 0]``, ``[scheduler]`` (numbered in start order;
    MXNet's rank may differ) and ``[launch]`` for the launcher's own messages.

    Returns 0 when every worker succeeded; else the exit status of the first process that failed
    (signals as 128+n), 124 when ``timeout`` seconds passed. ``kill_on_failure``: stop everything as soon
    as one process fails (otherwise wait for the other workers, e.g. to watch their watchdog fire).
    Every started process group is killed on return, on Ctrl-C and on SIGTERM.
    """
    command = list(command)
    if not command:
        raise UserError("no command to launch: put it after '--', e.g. -- python train_segmentation.py ...")
    if num_workers < 1:
        raise UserError(f"-n/--num-workers must be >= 1, got {num_workers}")
    if num_servers < 1:
        raise UserError(f"-s/--num-servers must be >= 1, got {num_servers}")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout must be > 0 seconds, got {timeout}")
    output = output if output is not None else sys.stdout
    lock = threading.Lock()

    def say(message: str) -> None:
        with lock:
            output.write(f"[launch] {message}\n")
            output.flush()

    job_env = dict(os.environ)
    job_env.update(env or {})
    job_env.update(LOOPBACK_ENV)
    job_env.update({"DMLC_PS_ROOT_PORT": str(free_loopback_port()), "DMLC_NUM_SERVER": str(num_servers),
                    "DMLC_NUM_WORKER": str(num_workers), "PYTHONUNBUFFERED": "1"})
    # The workers share the cores (OpenMP threads spinning on an oversubscribed core slow everyone down);
    # the scheduler and servers barely compute. A user's OMP_NUM_THREADS (or one in ``env``) is kept as it is.
    worker_threads = {name: value for name, value in threads_per_process(num_workers).items()
                      if name not in (env or {})}
    helper_threads = {name: "1" for name in worker_threads}
    roles = [("scheduler", "scheduler")] + [(f"server {i}", "server") for i in range(num_servers)] \
        + [(f"worker {i}", "worker") for i in range(num_workers)]

    procs: Dict[str, subprocess.Popen] = {}
    pumps: List[threading.Thread] = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = None
    if in_main_thread:
        def on_sigterm(signum, frame):
            raise KeyboardInterrupt

        previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
    start = time.monotonic()
    try:
        try:
            for name, role in roles:
                # Own session per child: killpg reaches whatever it forks; Ctrl-C goes through the launcher.
                threads = worker_threads if role == "worker" else helper_threads
                procs[name] = subprocess.Popen(command, env=dict(job_env, DMLC_ROLE=role, **threads),
                                               stdin=subprocess.DEVNULL,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                               start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            raise UserError(f"cannot start {command[0]!r}: {exc}") from None
        for name, proc in procs.items():
            thread = threading.Thread(target=_pump, args=(name, proc.stdout, output, lock), daemon=True)
            thread.start()
            pumps.append(thread)
        port = job_env["DMLC_PS_ROOT_PORT"]
        say(f"started scheduler (127.0.0.1:{port}), {num_servers} server(s), {num_workers} worker(s): "
            f"{' '.join(command)}")
        return _supervise(procs, timeout, kill_on_failure, server_grace_s, start, say)
    finally:
        _stop_process_groups(procs)
        for thread in pumps:
            thread.join(timeout=5)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _supervise(procs: Dict[str, subprocess.Popen], timeout: Optional[float], kill_on_failure: bool,
               server_grace_s: float, start: float, say) -> int:
    workers = [name for name in procs if name.startswith("worker")]
    done: Dict[str, int] = {}
    first_failure: Optional[int] = None
    workers_done_at: Optional[float] = None
    while True:
        for name, proc in procs.items():
            if name in done or proc.poll() is None:
                continue
            done[name] = status = _exit_status(proc.returncode)
            say(f"{name} exited with code {status} after {time.monotonic() - start:.1f} s")
            if status != 0 and first_failure is None:
                first_failure = status
                if kill_on_failure:
                    say(f"{name} failed: stopping all processes")
                    return status
        if all(name in done for name in procs):
            return first_failure or 0
        if all(name in done for name in workers):
            if first_failure is not None:
                say("all workers have stopped, at least one failed: stopping the scheduler and servers")
                return first_failure
            workers_done_at = workers_done_at or time.monotonic()
            if time.monotonic() - workers_done_at > server_grace_s:
                say(f"workers finished but the scheduler/servers did not exit within {server_grace_s:g} s: "
                    "stopping them")
                return 0
        if timeout is not None and time.monotonic() - start > timeout:
            say(f"timed out after {timeout:g} s: stopping all processes")
            return 124
        time.sleep(0.1)
