"""Where a sweep's jobs run: in this process, in a local process pool, or on a Ray cluster.

The interface is one method, ``run(fn, tasks)``, yielding ``(task, result, error)`` as jobs
finish (in any order); the sweep logic never knows which executor it has. Every executor
runs a job with the same number of torch threads ``T`` (set by the job itself), so the
same sweep gives the same numbers under each of them.

Thread budget (:func:`thread_budget`): parallel jobs x threads per job never exceed the CPUs the
executor is given (this process's CPU affinity, or a Ray cluster's CPUs per node), because
oversubscribed OpenMP threads collapse throughput. Workers are lowered first (which changes no
number); only a spec whose ``threads`` alone exceed the CPUs has its threads lowered, by every
executor alike (so they still agree), and the sweep's provenance records the budget
(``thread_budget``: the CPUs, the workers and threads asked for and used, and why).

Connecting to a Ray cluster (``--address``) is checked before ``ray.init``, so that a wrong
address is one clear error rather than a hang or a traceback: the address must parse
(``HOST:PORT``, ``[IPv6]:PORT``, ``ray://HOST:PORT`` or ``auto``); a TCP connect to it must
succeed within :data:`RAY_CONNECT_TIMEOUT_S` seconds (``POSTHOC_VQ_RAY_CONNECT_TIMEOUT``
overrides it); and, for a GCS address, the Ray GCS there must answer a handshake within the
same time. A dead, refusing or non-Ray address thus fails within about twice the timeout.
``ray.init`` has no timeout argument; once the handshake succeeded it runs under Ray's own
limits (at most ``RAY_NUM_REDIS_GET_RETRIES`` = 20 GCS connection attempts, each bounded by
Ray's RPC timeouts, and ``RAY_gcs_server_request_timeout_seconds`` = 60 s to find a Ray node
on this machine), so it cannot hang forever either; any failure it raises becomes an
:class:`~posthoc_vq.errors.ExecutorError` naming the address.

Token authentication: a cluster started with ``RAY_AUTH_MODE=token`` accepts a client that
has its token in Ray's own environment variable ``RAY_AUTH_TOKEN`` (or a file named by
``RAY_AUTH_TOKEN_PATH``). Ray sends the token only when ``RAY_AUTH_MODE=token``; a token
given in either variable turns that on unless ``RAY_AUTH_MODE`` is set explicitly. A missing
or wrong token is an :class:`~posthoc_vq.errors.ExecutorError` naming ``RAY_AUTH_TOKEN``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import socket
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Callable, Iterator, Protocol

from posthoc_vq.errors import ConfigError, ExecutorError
from posthoc_vq.extras import require

Outcome = tuple[dict[str, Any], Any, str | None]
EXECUTORS = ("local", "process", "ray")

RAY_CONNECT_TIMEOUT_S = 10.0
"""Seconds the TCP connect to a Ray address, and then the GCS handshake, may each take."""
RAY_CONNECT_TIMEOUT_ENV = "POSTHOC_VQ_RAY_CONNECT_TIMEOUT"
RAY_TOKEN_ENV = "RAY_AUTH_TOKEN"  # Ray's own variables for token authentication
RAY_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadBudget:
    """How many jobs run at once (``workers``; None: as many as a Ray cluster schedules) with how many torch threads each."""

    cpus: int
    workers: int | None
    threads: int
    asked_workers: int | None
    asked_threads: int

    @property
    def notes(self) -> list[str]:
        out = []
        if self.threads != self.asked_threads:
            out.append(f"threads per job lowered from {self.asked_threads} to {self.threads}: only {self.cpus} CPUs "
                       f"(the numbers are those of threads={self.threads}, not {self.asked_threads})")
        if self.workers is not None and self.asked_workers is not None and self.workers != self.asked_workers:
            out.append(f"workers lowered from {self.asked_workers} to {self.workers}: {self.asked_workers} x {self.threads} threads "
                       f"would exceed {self.cpus} CPUs")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "workers": self.workers, "threads": self.threads, "asked_workers": self.asked_workers,
                "asked_threads": self.asked_threads, "notes": self.notes}


def thread_budget(workers: int | None, threads: int, cpus: int | None = None) -> ThreadBudget:
    """Workers x threads within ``cpus`` (default :func:`available_cpus`): threads capped at the CPUs, then workers at CPUs // threads."""
    if threads < 1:
        raise ConfigError(f"threads must be >= 1 (got {threads})")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {workers})")
    cpus = available_cpus() if cpus is None else max(1, int(cpus))
    t = min(threads, cpus)
    w = None if workers is None else max(1, min(workers, cpus // t))
    return ThreadBudget(cpus=cpus, workers=w, threads=t, asked_workers=workers, asked_threads=threads)


class Executor(Protocol):
    def run(self, fn: Callable[[dict[str, Any]], Any], tasks: list[dict[str, Any]]) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Jobs one after another in this process (the default)."""

    def run(self, fn, tasks):
        for task in tasks:
            try:
                yield task, fn(task), None
            except Exception:
                yield task, None, traceback.format_exc()

    def close(self) -> None:
        pass


#: seconds between a pool worker's checks that the sweep driver that started it is still alive
PARENT_POLL_SECONDS = 1.0


def _exit_when_orphaned(parent: int, poll: float = PARENT_POLL_SECONDS) -> None:
    """End this process once its parent ``parent`` is gone (it was re-parented), so a killed sweep driver
    leaves no worker training on: what the worker wrote is atomic, and the next ``ablate`` resumes it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(143)  # as if SIGTERMed: no cleanup that could write half a file

    threading.Thread(target=watch, name="posthoc-vq-parent-watch", daemon=True).start()


def _worker_init(parent: int) -> None:
    # the OpenMP wait policy is posthoc_vq's default (posthoc_vq.waitpolicy), inherited or applied when this
    # spawned worker imported posthoc_vq to unpickle this function, before anything imported torch; a user's own
    # OMP_WAIT_POLICY / GOMP_SPINCOUNT comes through the environment unchanged
    _exit_when_orphaned(parent)


class ProcessExecutor:
    """A local pool of ``workers`` processes (spawned, so each has its own torch runtime)."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1 (got {workers})")
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(os.getpid(),))

    def run(self, fn, tasks):
        futures = {self.pool.submit(fn, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result(), None
            except Exception:
                yield futures[future], None, traceback.format_exc()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def require_ray() -> Any:
    """The ``ray`` module, or a MissingExtraError naming the 'sweeps' extra."""
    return require("ray", "sweeps", "The Ray executor (--executor ray)")


class RayExecutor:
    """Ray tasks with ``num_cpus=threads`` each, on an existing cluster (``address``) or a local one (``num_cpus``).

    On a cluster the sweep directory must be on a path every node sees: jobs write their
    artifacts there, and results come back to this process, which alone writes the database.
    """

    def __init__(self, threads: int, address: str | None = None, num_cpus: int | None = None):
        ray = require_ray()

        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                connect_ray(ray, address, kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
        self.threads = threads

    def node_cpus(self) -> int:
        """CPUs of the cluster's largest node: one job must fit on one node."""
        try:
            cpus = [n.get("Resources", {}).get("CPU", 0) for n in self.ray.nodes() if n.get("Alive", True)]
        except Exception:
            cpus = []
        return int(max(cpus)) if cpus and max(cpus) >= 1 else available_cpus()

    def run(self, fn, tasks):
        remote = self.ray.remote(num_cpus=self.threads, max_retries=0)(fn)
        pending = {remote.remote(task): task for task in tasks}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    yield task, self.ray.get(ref), None
                except Exception:
                    yield task, None, traceback.format_exc()

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


@dataclass(frozen=True)
class RayAddress:
    """A parsed ``--address``: a GCS address ``host:port``, or a Ray Client one (``ray://``)."""

    host: str
    port: int
    client: bool = False

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return ("ray://" if self.client else "") + self.hostport


_ADDRESS_FORMS = ("expected HOST:PORT, the GCS address that `ray start --head` prints (port 6379 by default), "
                  "[IPv6]:PORT, ray://HOST:PORT (Ray Client) or 'auto' (the cluster `ray start` left on this machine)")


def parse_ray_address(address: str) -> RayAddress | None:
    """``--address`` as a :class:`RayAddress`; ``None`` for ``auto``. A malformed one is a :class:`ConfigError`."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"Ray address {address!r} is malformed ({why}); {_ADDRESS_FORMS}")

    text = address.strip()
    if text == "auto":
        return None
    client = False
    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme.lower() != "ray":
            raise bad(f"unknown scheme '{scheme}://'")
        client = True
    text = text.rstrip("/")
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or not rest.startswith(":"):
            raise bad("an IPv6 host needs the form [HOST]:PORT")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise bad("no port")
        if ":" in host:
            raise bad("an IPv6 host must be in brackets, [HOST]:PORT")
    if not host:
        raise bad("no host")
    if any(c.isspace() or c in "/?#@[]" for c in host):
        raise bad(f"invalid host {host!r}")
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise bad(f"port {port_text!r} is not a number from 1 to 65535")
    return RayAddress(host, int(port_text), client)


def ray_connect_timeout() -> float:
    """:data:`RAY_CONNECT_TIMEOUT_S`, or the seconds in ``POSTHOC_VQ_RAY_CONNECT_TIMEOUT``."""
    raw = os.environ.get(RAY_CONNECT_TIMEOUT_ENV, "").strip()
    if not raw:
        return RAY_CONNECT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{RAY_CONNECT_TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


def _what_to_do(target: RayAddress) -> str:
    return (f"start a cluster there with `ray start --head --port={target.port}` and pass the address it prints, "
            "or omit --address to run the sweep on a local Ray cluster")


def _probe_tcp(target: RayAddress, timeout: float) -> None:
    """A TCP connect to the address within ``timeout`` seconds, else an :class:`ExecutorError` saying why."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise ExecutorError(f"cannot resolve the host of Ray address {target}: {err.strerror or err}; "
                            f"check the address, or omit --address to run the sweep on a local Ray cluster") from None
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(sockaddr)
            return
        except OSError as err:
            last = err
    if isinstance(last, ConnectionRefusedError):
        raise ExecutorError(f"no Ray cluster at {target}: connection refused, nothing listens on port {target.port} there; "
                            f"{_what_to_do(target)}")
    if last is None or isinstance(last, TimeoutError):
        raise ExecutorError(f"no Ray cluster at {target}: a TCP connection got no answer within {timeout:g} s "
                            f"(host down or unreachable, or a firewall drops the packets; {RAY_CONNECT_TIMEOUT_ENV}=SECONDS "
                            f"sets the limit); check the address, or {_what_to_do(target)}")
    raise ExecutorError(f"cannot reach Ray address {target}: {last.strerror or last}; check the address, or {_what_to_do(target)}")


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _text(err: BaseException) -> str:
    try:
        return str(err)
    except Exception:  # Ray's AuthenticationError.__str__ queries Ray's config
        return repr(err)


def _is_auth_error(err: BaseException) -> bool:
    """Whether Ray refused the token (Ray raises ``ray.exceptions.AuthenticationError``, which ``ray.init`` wraps as text)."""
    return any(type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in _text(e) or "AuthenticationError" in _text(e)
               for e in _chain(err))


def _summary(err: BaseException) -> str:
    """One line: the error's first line, and the last line of its cause (Ray puts whole tracebacks in messages)."""

    def line(e: BaseException, last: bool) -> str:
        lines = [s.strip() for s in _text(e).splitlines() if s.strip()]
        if not lines:
            return type(e).__name__
        return lines[-1] if last and len(lines) > 1 else lines[0]

    text = line(err, "Traceback (most recent call last)" in _text(err))
    cause = err.__cause__
    if cause is not None:
        text += f" ({line(cause, True)})"
    return text if len(text) <= 400 else text[:397] + "..."


def _auth_message(target: RayAddress | None) -> str:
    token, path, mode = (os.environ.get(v) for v in (RAY_TOKEN_ENV, RAY_TOKEN_PATH_ENV, RAY_AUTH_MODE_ENV))
    where = f"at {target}" if target else "found by --address auto"
    set_token = f"set {RAY_TOKEN_ENV} to the cluster's token (`ray get-auth-token` on the head node prints it)"
    if (token or path) and mode is not None and mode.strip().lower() != "token":
        fix = (f"{RAY_AUTH_MODE_ENV}={mode} stops Ray from sending the token in {RAY_TOKEN_ENV if token else RAY_TOKEN_PATH_ENV}; "
               f"unset {RAY_AUTH_MODE_ENV} or set it to 'token'")
    elif token:
        fix = f"it rejected the token in {RAY_TOKEN_ENV}; {set_token}"
    elif path:
        fix = f"it rejected the token in the file {RAY_TOKEN_PATH_ENV}={path} (or that file is missing); {set_token}"
    else:
        fix = f"no token was given; {set_token}"
    return f"the Ray cluster {where} uses token authentication and refused this client: {fix}, then run again"


def _use_token_from_env() -> None:
    """Ray sends a token only when ``RAY_AUTH_MODE=token``; a token given in Ray's variables means that, unless the mode is set."""
    if RAY_AUTH_MODE_ENV in os.environ or not (os.environ.get(RAY_TOKEN_ENV) or os.environ.get(RAY_TOKEN_PATH_ENV)):
        return
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication
        return
    os.environ[RAY_AUTH_MODE_ENV] = "token"
    Config.initialize("")  # Ray caches its config, the authentication mode included: re-read it from the environment
    AuthenticationTokenLoader.instance().reset_cache()


def _check_token(target: RayAddress | None) -> None:
    """With ``RAY_AUTH_MODE=token`` a token must exist: Ray's GCS client aborts the process without one."""
    try:
        from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    except ImportError:
        return
    try:
        ensure_token_if_auth_enabled(None, create_token_if_missing=False)
    except Exception as err:
        if _is_auth_error(err):
            raise ExecutorError(_auth_message(target)) from None
        raise


def _probe_gcs(target: RayAddress, timeout: float) -> None:
    """Ray's GCS client must connect (and pass token authentication) within ``timeout`` seconds.

    It runs in a daemon thread (it releases the GIL while it waits) because it has no timeout of
    its own shorter than about 30 s per attempt; a thread still waiting is left behind.
    """
    try:
        from ray._raylet import GcsClient
    except ImportError:  # a Ray without a standalone GCS client: ray.init's own checks apply
        return
    outcome: dict[str, BaseException | None] = {}

    def handshake() -> None:
        try:
            GcsClient(address=target.hostport)  # connects and fetches the cluster id
            outcome["error"] = None
        except BaseException as err:  # noqa: BLE001 - reported to the caller
            outcome["error"] = err

    thread = threading.Thread(target=handshake, name="posthoc-vq-ray-handshake", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" not in outcome:
        raise ExecutorError(f"{target} accepts TCP connections but no Ray cluster answered there within {timeout:g} s: "
                            "is it the GCS port that `ray start --head` prints (6379 by default), not the dashboard's (8265) "
                            f"or Ray Client's (10001)? Check the address ({RAY_CONNECT_TIMEOUT_ENV}=SECONDS sets the limit), "
                            "or omit --address to run the sweep on a local Ray cluster")
    err = outcome["error"]
    if err is None:
        return
    if _is_auth_error(err):
        raise ExecutorError(_auth_message(target)) from None
    raise ExecutorError(f"{target} did not answer as a Ray cluster: {_summary(err)}; check that it is the GCS address "
                        "`ray start --head` prints, or omit --address to run the sweep on a local Ray cluster") from None


def connect_ray(ray: Any, address: str, init_kwargs: dict[str, Any]) -> None:
    """``ray.init(address=...)``, after checking the address answers as a Ray cluster; every failure is an :class:`ExecutorError`."""
    target = parse_ray_address(address)
    timeout = ray_connect_timeout()
    if target is not None and target.client and importlib.util.find_spec("grpc") is None:
        raise ExecutorError(f"{target} is a Ray Client address, and Ray Client needs grpcio (`pip install 'ray[client]'`), "
                            "which is not installed; give the cluster's GCS address HOST:PORT instead (`ray start --head` prints it), "
                            "or omit --address to run the sweep on a local Ray cluster")
    _use_token_from_env()
    if target is not None:
        _probe_tcp(target, timeout)
        if not target.client:
            _check_token(target)
            _probe_gcs(target, timeout)
    kwargs = {"log_to_driver": False} if target is not None and target.client else init_kwargs
    errors: tuple[type[BaseException], ...] = (ConnectionError, RuntimeError, ValueError, TimeoutError)
    try:
        from ray.exceptions import RayError

        errors += (RayError,)
    except ImportError:
        pass
    try:
        ray.init(address=str(target) if target is not None else "auto", **kwargs)
    except errors as err:
        try:
            if ray.is_initialized():
                ray.shutdown()
        except Exception:
            pass
        if _is_auth_error(err):
            raise ExecutorError(_auth_message(target)) from err
        where = f"at {target}" if target is not None else "(--address auto: the one `ray start` left on this machine)"
        raise ExecutorError(f"cannot connect to the Ray cluster {where}: {_summary(err)}; "
                            "check the address, or omit --address to run the sweep on a local Ray cluster") from err


def make_executor(name: str, *, workers: int = 2, threads: int = 1, address: str | None = None) -> Executor:
    """``local``, ``process`` (``workers`` processes) or ``ray`` (``address``, else a local cluster of ``workers * threads`` CPUs).

    ``workers`` and ``threads`` are used as given: :func:`make_budgeted_executor` fits them to the CPUs first."""
    if name == "local":
        return LocalExecutor()
    if name == "process":
        return ProcessExecutor(workers)
    if name == "ray":
        return RayExecutor(threads, address=address, num_cpus=None if address else workers * threads)
    raise ConfigError(f"unknown executor '{name}'; choose one of {', '.join(EXECUTORS)}")


def make_budgeted_executor(name: str, *, workers: int = 2, threads: int = 1, address: str | None = None,
                           cpus: int | None = None) -> tuple[Executor, ThreadBudget]:
    """:func:`make_executor` within the thread budget (:func:`thread_budget`): the executor and the budget its jobs must use
    (``budget.threads`` torch threads each). ``cpus`` defaults to this process's CPUs; on an existing Ray cluster
    (``address``) it is the largest node's CPUs, and Ray's scheduler bounds the jobs per node."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor '{name}'; choose one of {', '.join(EXECUTORS)}")
    if name == "ray" and address:
        ex = make_executor(name, threads=threads, address=address)
        budget = thread_budget(None, threads, cpus if cpus is not None else ex.node_cpus())
        ex.threads = budget.threads
        return ex, budget
    budget = thread_budget(1 if name == "local" else workers, threads, cpus)
    return make_executor(name, workers=budget.workers or 1, threads=budget.threads, address=address), budget
