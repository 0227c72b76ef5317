"""``tools/serve.py`` as a child process on 127.0.0.1, for the tests and the load benchmark."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from ..launcher import free_loopback_port

REPO = Path(__file__).resolve().parents[2]

__all__ = ["free_loopback_port", "start_server_process"]


def start_server_process(weights: str, port: Optional[int] = None, *extra: str, timeout_s: float = 120.0,
                         capture_output: bool = True) -> subprocess.Popen:
    """Start ``tools/serve.py --weights WEIGHTS --host 127.0.0.1 --port PORT EXTRA...`` and return it once
    ``/healthz`` answers (``port`` None: a free one; read it back from ``process.port``). RuntimeError, with
    the server's output when captured, if it exits or stays silent for ``timeout_s``; it is killed then."""
    import requests

    port = port or free_loopback_port()
    env = dict(os.environ, GLUON_FASHION_NO_PROGRESS="1")
    output = subprocess.PIPE if capture_output else None
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "serve.py"), "--weights", str(weights), "--host",
                             "127.0.0.1", "--port", str(port), *extra], cwd=REPO, env=env, stdout=output,
                            stderr=subprocess.STDOUT if capture_output else None, text=True)
    proc.port = port  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = proc.stdout.read() if capture_output else ""
            raise RuntimeError(f"serve.py exited with {proc.returncode}: {said}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                return proc
        except requests.ConnectionError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"serve.py did not answer /healthz within {timeout_s:g} s")
