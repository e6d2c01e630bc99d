"""``--executor ray --address``: a dead, refusing, non-Ray or malformed address is one clear error within the
stated timeout, and a token-authenticated cluster (a real head started here) works with Ray's ``RAY_AUTH_TOKEN``
and fails clearly without it or with a wrong one."""

import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from posthoc_vq.errors import ConfigError, ExecutorError
from posthoc_vq.experiments import executors
from posthoc_vq.experiments.executors import RAY_CONNECT_TIMEOUT_ENV, RAY_CONNECT_TIMEOUT_S, make_executor, parse_ray_address

TINY_SPEC = """\
name: raytoken
base: digits
set:
  train.epochs: 1
  model.channels: [8, 16]
axes:
  model.latent_dim: [8, 4]
  seed: [0]
  weights.bits: [32]
  quantize.method: [none]
compare:
  axis: model.latent_dim
  reference: 8
  metrics: [psnr_db]
  pair_by: seed
threads: 1
"""
RAY_ENV = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", RAY_CONNECT_TIMEOUT_ENV)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without Ray's address and token variables, with its own HOME (no ~/.ray/auth_token)."""
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    return env | {"HOME": str(home), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"} | extra


def _ablate(tmp_path: Path, address: str, env: dict[str, str], timeout: float = 120):
    """``posthoc-vq ablate`` on a 2-cell spec with ``--executor ray --address``: (rc, stderr, stdout, seconds)."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    cmd = [sys.executable, "-m", "posthoc_vq.cli", "ablate", str(spec), "--out", str(tmp_path / "sweep"), "--no-progress",
           "--executor", "ray", "--address", address]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stderr, proc.stdout, time.monotonic() - start


def _error_line(stderr: str) -> str:
    """The CLI's one-line error; no traceback anywhere (Ray's own C++ log lines may precede it)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture
def no_ray_env(monkeypatch):
    for var in RAY_ENV:
        monkeypatch.delenv(var, raising=False)


# --- (a) nothing listens, or nothing answers ------------------------------------------------------------


def test_address_where_nothing_listens_fails_fast_and_clearly(no_ray_env):
    port = _free_port()  # bound, then closed: nothing listens there
    start = time.monotonic()
    with pytest.raises(ExecutorError) as err:
        make_executor("ray", threads=1, address=f"127.0.0.1:{port}")
    elapsed = time.monotonic() - start
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "connection refused" in msg and "nothing listens" in msg
    assert "ray start --head" in msg and "omit --address" in msg
    assert elapsed < RAY_CONNECT_TIMEOUT_S + 5, elapsed


def test_address_that_never_answers_times_out_within_the_stated_limit(no_ray_env, monkeypatch):
    """A listener whose accept queue is full drops new SYNs: the connect gets no answer at all (like a dead host)."""
    monkeypatch.setenv(RAY_CONNECT_TIMEOUT_ENV, "1.5")
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        filler.connect(("127.0.0.1", port))  # fills the queue; nothing ever accepts
        start = time.monotonic()
        with pytest.raises(ExecutorError) as err:
            make_executor("ray", threads=1, address=f"127.0.0.1:{port}")
        elapsed = time.monotonic() - start
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "no answer within 1.5 s" in msg and RAY_CONNECT_TIMEOUT_ENV in msg
    assert 1.4 <= elapsed < 1.5 + 3, elapsed


# --- (b) something listens, but it is not Ray -------------------------------------------------------------


class _NotRay:
    """A TCP server on 127.0.0.1 that accepts and then sends HTTP garbage and closes, or says nothing."""

    def __init__(self, mode: str):
        self.mode, self.conns = mode, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "garbage":
                try:
                    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nnot ray")
                finally:
                    conn.close()
            else:
                self.conns.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize("mode", ["garbage", "silent"])
def test_port_that_is_not_ray_is_a_clear_error_not_a_hang(tmp_path, mode):
    """Through the CLI, in a subprocess: Ray's own client would wait minutes here."""
    server = _NotRay(mode)
    try:
        env = _clean_env(tmp_path, **{RAY_CONNECT_TIMEOUT_ENV: "2"})
        rc, stderr, _, elapsed = _ablate(tmp_path, f"127.0.0.1:{server.port}", env, timeout=60)
    finally:
        server.close()
    assert rc == 1, stderr  # an ExecutorError: failed work
    line = _error_line(stderr)
    assert f"127.0.0.1:{server.port} accepts TCP connections but no Ray cluster answered there within 2 s" in line
    assert "GCS port" in line and "omit --address" in line
    assert elapsed < 2 + 25, elapsed  # 2 s of handshake, the rest is starting Python, torch and Ray


# --- (c) malformed addresses and timeouts -----------------------------------------------------------------


@pytest.mark.parametrize("address, why", [
    ("127.0.0.1", "no port"),
    ("localhost:ray", "port 'ray'"),
    ("localhost:0", "port '0'"),
    ("localhost:70000", "port '70000'"),
    (":6379", "no host"),
    ("::1:6379", "IPv6 host must be in brackets"),
    ("[::1:6379", "[HOST]:PORT"),
    ("http://localhost:6379", "unknown scheme 'http://'"),
    ("ray://headnode", "no port"),
    ("my host:6379", "invalid host"),
])
def test_malformed_address_is_a_clear_config_error(no_ray_env, address, why):
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        make_executor("ray", threads=1, address=address)
    msg = str(err.value)
    assert repr(address) in msg and why in msg and "HOST:PORT" in msg
    assert time.monotonic() - start < 2  # rejected before any connection attempt


def test_well_formed_addresses_parse():
    assert (parse_ray_address("127.0.0.1:6379").host, parse_ray_address("127.0.0.1:6379").port) == ("127.0.0.1", 6379)
    assert str(parse_ray_address(" [::1]:6379 ")) == "[::1]:6379"
    client = parse_ray_address("ray://head.example:10001")
    assert client.client and client.host == "head.example" and client.port == 10001
    assert parse_ray_address("auto") is None


def test_ray_client_address_is_a_clear_error_when_nothing_listens(no_ray_env):
    port = _free_port()
    with pytest.raises(ExecutorError) as err:
        make_executor("ray", threads=1, address=f"ray://127.0.0.1:{port}")
    msg = str(err.value)
    assert f"ray://127.0.0.1:{port}" in msg
    assert "grpcio" in msg or "connection refused" in msg  # Ray Client not installed here, or nothing listens


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan"])
def test_bad_timeout_variable_is_a_clear_config_error(no_ray_env, monkeypatch, value):
    monkeypatch.setenv(RAY_CONNECT_TIMEOUT_ENV, value)
    with pytest.raises(ConfigError, match=f"{RAY_CONNECT_TIMEOUT_ENV}='{value}' is not a positive number of seconds"):
        make_executor("ray", threads=1, address=f"127.0.0.1:{_free_port()}")


# --- ray.init's own failures, in the exact shape Ray 2.x raises them ---------------------------------------


def _failing_init(cause_text: str):
    """What ray.init(address=...) raises when the GCS connection fails (worker.py / node.py): the last error as text."""

    def init(*args, **kwargs):
        try:
            raise RuntimeError(f"Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                               f'  File "node.py", line 996, in _init_gcs_client\n{cause_text}\n')
        except RuntimeError as e:
            raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6379") from e

    return init


@pytest.mark.parametrize("cause, expected", [
    ("ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token is missing or incorrect.",
     "uses token authentication and refused this client: no token was given; set RAY_AUTH_TOKEN"),
    ("ray.exceptions.RpcError: Timed out while waiting for GCS to become available.",
     "cannot connect to the Ray cluster at 127.0.0.1:{port}: Failed to connect to Ray cluster at 192.0.2.2:6379 "
     "(ray.exceptions.RpcError: Timed out while waiting for GCS to become available.)"),
])
def test_ray_init_failures_become_one_line_errors(no_ray_env, monkeypatch, cause, expected):
    import ray

    port = _free_port()
    monkeypatch.setattr(executors, "_probe_tcp", lambda target, timeout: None)  # the address checks pass...
    monkeypatch.setattr(executors, "_probe_gcs", lambda target, timeout: None)
    monkeypatch.setattr(ray, "init", _failing_init(cause))  # ...and ray.init fails anyway
    with pytest.raises(ExecutorError) as err:
        make_executor("ray", threads=1, address=f"127.0.0.1:{port}")
    msg = str(err.value)
    assert expected.format(port=port) in msg and "\n" not in msg


# --- (d) a real head node with token authentication --------------------------------------------------------


def _kill_head(root: Path) -> None:
    """SIGKILL the processes of the head started under ``root`` (their command lines name it) and their children."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            procs[int(entry.name)] = (ppid, cmdline)
    doomed = {pid for pid, (_, cmd) in procs.items() if str(root) in cmd and pid != os.getpid()}
    grew = True
    while grew:  # raylet's workers and agents rename themselves (ray::...), so take descendants too
        more = {pid for pid, (ppid, _) in procs.items() if ppid in doomed} - doomed
        doomed |= more
        grew = bool(more)
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def token_head():
    """``ray start --head`` on 127.0.0.1 with RAY_AUTH_MODE=token, in its own temp dir; killed afterwards."""
    token = secrets.token_hex(16)
    root = Path(tempfile.mkdtemp(prefix="pvq_ray_", dir="/tmp"))  # short: Ray's unix sockets live under it
    (root / "home").mkdir()
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}", "--num-cpus=1",
           f"--temp-dir={root / 't'}", "--include-dashboard=false", "--disable-usage-stats",
           f"--dashboard-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}"]
    env = _clean_env(root / "home", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        yield f"127.0.0.1:{port}", token
    finally:
        _kill_head(root)
        shutil.rmtree(root, ignore_errors=True)


def test_token_cluster_runs_the_sweep_with_ray_auth_token(token_head, tmp_path):
    address, token = token_head
    rc, stderr, stdout, _ = _ablate(tmp_path, address, _clean_env(tmp_path, RAY_AUTH_TOKEN=token))
    assert rc == 0, stderr[-3000:]
    assert "2/2 cells done (2 run now, 0 failed)" in " ".join(stdout.split()), stdout
    with sqlite3.connect(tmp_path / "sweep" / "results.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs WHERE status='done'").fetchone()[0] == 2


@pytest.mark.parametrize("given, expected", [
    ({}, "no token was given; set RAY_AUTH_TOKEN to the cluster's token"),
    ({"RAY_AUTH_MODE": "token"}, "no token was given; set RAY_AUTH_TOKEN to the cluster's token"),
    ({"RAY_AUTH_TOKEN": "not-the-token"}, "it rejected the token in RAY_AUTH_TOKEN; set RAY_AUTH_TOKEN to the cluster's token"),
    ({"RAY_AUTH_TOKEN": "TOKEN", "RAY_AUTH_MODE": "disabled"}, "RAY_AUTH_MODE=disabled stops Ray from sending the token in RAY_AUTH_TOKEN"),
])
def test_token_cluster_without_the_right_token_is_a_clear_error(token_head, tmp_path, given, expected):
    address, token = token_head
    given = {k: token if v == "TOKEN" else v for k, v in given.items()}
    rc, stderr, _, elapsed = _ablate(tmp_path, address, _clean_env(tmp_path, **given), timeout=60)
    assert rc == 1, stderr[-3000:]  # an ExecutorError: failed work
    line = _error_line(stderr)
    assert f"the Ray cluster at {address} uses token authentication and refused this client" in line
    assert expected in line, line
    assert elapsed < 30, elapsed  # the handshake fails at once: no retry loop
