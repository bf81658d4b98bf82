"""Launch the demo in a subprocess on 127.0.0.1 and wait until it answers: shared by the demo's test modules.

A subprocess, not a thread, so that the server is the one a user launches (``python -m toolkit demo``) and so
that pytest's per-test warning capture does not reach into the server's request threads."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=10) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)


def start(command: list[str], log: Path, cwd: Path = REPO, port: int | None = None, timeout: float = 240,
          env: dict[str, str] | None = None) -> Server:
    """Run ``command`` (which must listen on ``port``, also given as GRADIO_SERVER_PORT) until it serves a page."""
    port = port or free_port()
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                   "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "PYTHONUNBUFFERED": "1",
                   **(env or {})}
    handle = open(log, "w")
    process = subprocess.Popen(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, env=environment)
    server = Server(process, f"http://127.0.0.1:{port}/", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log_text()[-4000:]}")
        if server.answers():
            return server
        time.sleep(1)
    server.stop()
    raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{server.log_text()[-4000:]}")


def start_demo(log: Path, *options: str, entry: tuple[str, ...] = ("-m", "toolkit", "demo")) -> Server:
    """The demo launched by ``entry`` (``python -m toolkit demo``, or ``demos/app.py``) on a free port."""
    port = free_port()
    return start([sys.executable, *entry, "--server-name", "127.0.0.1", "--server-port", str(port), *options],
                 log, port=port)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo as a user launches it (``python -m toolkit demo``), once per test module that imports it."""
    server = start_demo(tmp_path_factory.mktemp("demo") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """The same demo launched by the thin wrapper ``demos/app.py``."""
    server = start_demo(tmp_path_factory.mktemp("app") / "server.log", entry=(str(REPO / "demos" / "app.py"),))
    yield server
    server.stop()
