"""Shared test fixtures: a tiny seeded OpenCLIP model, a photo library made from real pictures, one Ray
head for the whole session (the CLI joins it through RAY_ADDRESS), and a helper that runs the CLI."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Ray 2.60 turns token authentication on for `ray start --head`; every Ray client in this test process
# (the state API, the Jobs SDK) and in the commands it starts must say so. Ray reads this once.
os.environ["RAY_AUTH_MODE"] = "token"

from ray_pipeline.cluster.runtime import token_for_new_head  # noqa: E402
from ray_pipeline.steps.summary import summary_in  # noqa: E402
from samples.models import save_tiny_clip  # noqa: E402

# A new machine has no Ray token (`ray start --head` then refuses to start): this session makes one in a
# folder of its own, named by RAY_AUTH_TOKEN_PATH for every Ray process the tests start, and removed at the end.
_TOKEN_FOLDER = tempfile.mkdtemp(prefix="ray-token-")
atexit.register(shutil.rmtree, _TOKEN_FOLDER, True)
os.environ.update(token_for_new_head(_TOKEN_FOLDER))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("model")
    config, checkpoint = save_tiny_clip(folder, seed=1234)
    _, other_checkpoint = save_tiny_clip(folder, seed=99)
    return {"config": str(config), "checkpoint": str(checkpoint), "other_checkpoint": str(other_checkpoint)}


@pytest.fixture(scope="session")
def tiny_model_args(tiny_model) -> list[str]:
    return ["--model", tiny_model["config"], "--checkpoint", tiny_model["checkpoint"]]


@pytest.fixture(scope="session")
def ray_head():
    """One `ray start --head` for the session, with its own temp folder so it is never joined by accident."""
    temp = tempfile.mkdtemp(prefix="rpt", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs_port, dashboard_port, metrics_port = free_port(), free_port(), free_port()
    # As from an activated virtualenv: job entrypoints that say `python` find this environment's.
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    started = subprocess.run(
        [ray_bin, "start", "--head", f"--port={gcs_port}", f"--dashboard-port={dashboard_port}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats",
         f"--metrics-export-port={metrics_port}",
         # Fixed by default (52365, 10001): a second session on the machine would find them taken, and its
         # job agent missing ("No available agent to submit job").
         f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}"],
        check=False, env=env, capture_output=True, text=True,
    )
    if started.returncode != 0:
        stop_processes_of(temp, f"127.0.0.1:{gcs_port}")
        pytest.fail(ray_start_failure(started, temp), pytrace=False)
    head = {
        "address": f"127.0.0.1:{gcs_port}",
        "dashboard": f"http://127.0.0.1:{dashboard_port}",
        "env": {"RAY_ADDRESS": f"127.0.0.1:{gcs_port}", "RAY_AUTH_MODE": "token"},
        "temp_dir": temp,
        "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
    }
    yield head
    stop_processes_of(temp, head["address"])
    shutil.rmtree(temp, ignore_errors=True)


def ray_start_failure(started: subprocess.CompletedProcess, temp_dir: str) -> str:
    """Why `ray start --head` failed, in Ray's own words: its output, and the ends of the head's error logs."""
    lines = [f"`ray start --head` exited with {started.returncode}", started.stdout[-3000:], started.stderr[-3000:]]
    for log in sorted(Path(temp_dir).glob("session_*/logs/*.err")):
        text = log.read_text(errors="replace").strip()
        if text:
            lines.append(f"--- {log.name} ---\n{text[-1500:]}")
    return "\n".join(lines)


def stop_processes_of(temp_dir: str, address: str) -> None:
    """Stop the Ray processes of this head only (named with its temp folder or its address, and their
    children): `ray stop` would stop every Ray on the machine, another test session's included."""
    import psutil

    port = f":{address.rpartition(':')[2]}"
    started = [p for p in psutil.process_iter(["cmdline"])
               if any(temp_dir in part or part.endswith(port) for part in p.info["cmdline"] or [])]
    mine = {p.pid: p for p in started}
    for process in started:  # workers and agents rename themselves (ray::...): found as children
        try:
            mine.update((child.pid, child) for child in process.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    mine = list(mine.values())
    for process in mine:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    for process in psutil.wait_procs(mine, timeout=5)[1]:  # the session is over: no need to wait long
        process.kill()


def run_cli(args: list[str], env: dict | None = None, cwd: str | Path | None = None, timeout: int = 300):
    """`python -m ray_pipeline ARGS` as a user runs it; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "ray_pipeline", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary_line(stdout: str) -> dict:
    """The JSON summary the ingest command prints on stdout."""
    summary = summary_in(stdout)
    assert summary is not None, f"no summary line in:\n{stdout[-3000:]}"
    return summary


def summary_of(completed) -> dict:
    assert completed.returncode == 0, completed.stderr[-3000:]
    return summary_line(completed.stdout)


@pytest.fixture
def cli(ray_head):
    """Run the CLI against the session's Ray head."""

    def run(*args: str, env: dict | None = None, **kwargs):
        return run_cli(list(args), env={**ray_head["env"], **(env or {})}, **kwargs)

    return run


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ChromaServer:
    """A real `chroma run` on loopback, which a test may stop and start again (same port, same data)."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> ChromaServer:
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("chroma")), "run", "--path", str(self.folder), "--host", "127.0.0.1",
             "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self.up, timeout=60, what="chroma run")
        return self

    def up(self) -> bool:
        import urllib.request

        try:
            return urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2).status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def count(self, collection: str) -> int:
        import chromadb

        try:
            return chromadb.HttpClient(host="127.0.0.1", port=self.port).get_collection(collection).count()
        except Exception:
            return 0


@pytest.fixture
def chroma_server(tmp_path):
    server = ChromaServer(tmp_path / "chroma-server").start()
    yield server
    server.stop()


# The Serve application, deployed once per session and shared by the Serve, web page and notebook tests.
from serve_app import service, shoots  # noqa: F401
