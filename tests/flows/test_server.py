"""The deployment path for real: a local Prefect server, prefect.yaml, a process worker, `deployment run --watch`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.flows.conftest import add_folder, tiny_parameters

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(api: str, server: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "prefect server exited during start-up"
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"prefect server at {api} not healthy after {timeout_s} s")


def _stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, with everything it started, by its PID."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.slow
def test_demo_deployment_runs_on_a_local_server_with_remote_shards(flow_data: dict[str, Path], tmp_path: Path) -> None:
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    (tmp_path / "home").mkdir()
    env = os.environ | {
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_API_URL": api,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }

    def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)

    add_folder(tmp_path / "unlabeled", "folder_a", 2)
    # Each of the two shards is a run of the teacher-inference deployment: the multi-worker path, on one machine.
    params = tiny_parameters(flow_data, tmp_path, baselines=[], render_overlays=0, num_shards=2,
                             shard_deployment="teacher-inference/shard")  # fmt: skip
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    worker = None
    try:
        _wait_healthy(api, server)
        assert cli("work-pool", "create", "gpu", "--type", "process").returncode == 0
        deployed = cli("--no-prompt", "deploy", "--all")  # as the demo and docs/prefect.md do
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        with open(tmp_path / "worker.log", "w") as log:
            command = [PREFECT, "worker", "start", "--pool", "gpu", "--limit", "3"]  # the parent run and 2 shards
            worker = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        run = cli("deployment", "run", "distill-flow/demo", "--watch", "--params", json.dumps(params), timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr + (tmp_path / "worker.log").read_text()[-3000:]
        assert "Completed" in run.stdout
        metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
        # No baseline asked for: gt_only still trains first, the FPD student's starting point (FPD's recipe).
        assert [(row["model"], row["init"]) for row in metrics] == [
            ("teacher", "given checkpoint"), ("student gt_only", "scratch"), ("student fpd", "gt_only student"),
        ]  # fmt: skip
        shards = json.loads((tmp_path / "out" / "run.json").read_text())["shards"]
        assert [s["shard_index"] for s in shards] == [0, 1] and sum(s["new"] for s in shards) > 0
        assert not list((tmp_path / "out" / "inference").glob("*.log"))  # no local shard process: flow runs did it
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
    assert server.returncode is not None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{api}/health", timeout=2)
