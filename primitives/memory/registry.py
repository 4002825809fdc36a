"""Which backend the environment describes, and how each one is built: the one registry.

==============================  ==============================================================
variable                        meaning
==============================  ==============================================================
``MEMORY_BACKEND``              ``auto`` (default), or a key of :data:`BACKENDS`: ``inmemory``,
                                ``redis``, ``ams``. ``auto`` takes the first backend whose
                                selecting variable is set (``AGENT_MEMORY_SERVER_URL``, then
                                ``REDIS_URL``), else the in-process one.
``MEMORY_RESILIENT``            default on: a server backend is wrapped in
                                :class:`~primitives.memory.resilient.ResilientBackend` (an
                                in-process fallback and a durable outbox); ``0`` turns it off
``MEMORY_OUTBOX_PATH``          the outbox file (default: one per store, see
                                :func:`~primitives.memory.resilient.identity.outbox_path`)
``MEMORY_WORKING_MEMORY_SIZE``  messages kept per session (default 50)
``MEMORY_TTL_*``                lifetimes per memory type
                                (:func:`~primitives.memory.record.default_ttls_from_env`)
==============================  ==============================================================

A new backend is its own subpackage plus one :class:`BackendSpec` in :data:`BACKENDS`; the
facade, ``doctor``, ``eval`` and the CLI's ``--backend`` choices all read this table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from primitives.errors import ConfigurationError
from primitives.memory.backend import MemoryBackend
from primitives.memory.record import MemoryType, default_ttls_from_env

__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "BackendSettings",
    "BackendSpec",
    "backend_from_env",
    "choose_backend",
    "env_float",
    "env_int",
]

_OFF = ("0", "false", "no", "off")


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """``env[name]`` as seconds ``> 0``, or ``default`` when unset or empty.

    Raises:
        ConfigurationError: not a number ``> 0``.
    """
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 < value < float("inf"):
        raise ConfigurationError(f"{name} must be a finite number > 0, got {raw!r}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """``env[name]`` as an int ``>= 1``, or ``default`` when unset or empty.

    Raises:
        ConfigurationError: not a whole number ``>= 1``.
    """
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ConfigurationError(f"{name} must be >= 1, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """What every backend takes from the environment."""

    working_memory_size: int
    default_ttls: Mapping[MemoryType, float | None]


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One registered backend.

    Attributes:
        choice: Its ``MEMORY_BACKEND`` value (and ``--backend`` choice).
        name: The ``name`` its instances report (``memory_backend`` in outputs).
        extra: The pip extra it needs (``None``: none).
        selected_by: The variable that selects it under ``MEMORY_BACKEND=auto`` (``None``: the
            default when no other is selected).
        build: Builds the backend from the environment (not wrapped, nothing connected).
        target: For a server backend, ``(url, key prefix)`` naming its store, from which the
            outbox identity is derived; ``None`` for an in-process one (never wrapped).
    """

    choice: str
    name: str
    extra: str | None
    selected_by: str | None
    build: Callable[[Mapping[str, str], BackendSettings], MemoryBackend]
    target: Callable[[Mapping[str, str]], tuple[str, str]] | None = None


def _inmemory(env: Mapping[str, str], settings: BackendSettings) -> MemoryBackend:
    from primitives.embeddings.config import embedder_from_env
    from primitives.memory.inmemory import InMemoryBackend

    return InMemoryBackend(
        maxsize=env_int(env, "MEMORY_MAXSIZE", 100_000),
        working_memory_size=settings.working_memory_size,
        embedder=embedder_from_env(env),
        default_ttls=settings.default_ttls,
    )


def _redis_target(env: Mapping[str, str]) -> tuple[str, str]:
    url = (env.get("REDIS_URL") or "").strip()
    if not url:
        raise ConfigurationError(
            "MEMORY_BACKEND=redis needs REDIS_URL (redis://host:port); to run one locally: "
            "pip install 'memory-primitives[redis-local]' && memory-primitives redis start"
        )
    return url, env.get("MEMORY_REDIS_PREFIX") or "memory:"


def _redis(env: Mapping[str, str], settings: BackendSettings) -> MemoryBackend:
    """``REDIS_URL``, ``MEMORY_REDIS_PREFIX`` (default ``memory:``),
    ``MEMORY_REDIS_CONNECT_TIMEOUT`` (seconds, default 2), ``MEMORY_REDIS_CLUSTER`` (``1``:
    ``REDIS_URL`` names a node of a Redis Cluster; records sharded by namespace, see
    docs/redis-backend.md), the ``MEMORY_EMBEDDINGS*`` embedder."""
    from primitives.embeddings.config import embedder_from_env

    url, prefix = _redis_target(env)
    try:
        from primitives.memory.redis_backend.backend import RedisBackend
        from primitives.redis_connection import cluster_from_env
    except ImportError as exc:
        raise ConfigurationError(_extra_needed("the Redis backend", "redis", exc)) from exc
    return RedisBackend(
        url,
        prefix=prefix,
        working_memory_size=settings.working_memory_size,
        socket_connect_timeout=env_float(env, "MEMORY_REDIS_CONNECT_TIMEOUT", 2.0),
        embedder=embedder_from_env(env),
        default_ttls=settings.default_ttls,
        cluster=cluster_from_env(env),
    )


def _ams_target(env: Mapping[str, str]) -> tuple[str, str]:
    url = (env.get("AGENT_MEMORY_SERVER_URL") or "").strip()
    if not url:
        raise ConfigurationError(
            "MEMORY_BACKEND=ams needs AGENT_MEMORY_SERVER_URL (http://host:port of an Agent Memory Server)"
        )
    return url, env.get("MEMORY_AMS_PREFIX") or ""


def _ams(env: Mapping[str, str], settings: BackendSettings) -> MemoryBackend:
    """``AGENT_MEMORY_SERVER_URL``, ``AGENT_MEMORY_SERVER_TOKEN`` (bearer token for AMS token
    auth), ``MEMORY_AMS_PREFIX`` (partition of a shared server, default none),
    ``MEMORY_AMS_DEDUPLICATE`` (default off: AMS deduplication may call an LLM),
    ``MEMORY_AMS_CONNECT_TIMEOUT`` (seconds, default 2)."""
    url, _ = _ams_target(env)
    try:
        from primitives.memory.ams_backend.backend import AgentMemoryServerBackend
    except ImportError as exc:
        raise ConfigurationError(_extra_needed("the Agent Memory Server backend", "ams", exc)) from exc
    return AgentMemoryServerBackend(
        url,
        token=(env.get("AGENT_MEMORY_SERVER_TOKEN") or "").strip() or None,
        prefix=env.get("MEMORY_AMS_PREFIX") or "",
        deduplicate=(env.get("MEMORY_AMS_DEDUPLICATE") or "0").strip().lower() in ("1", "true", "yes", "on"),
        working_memory_size=settings.working_memory_size,
        connect_timeout=env_float(env, "MEMORY_AMS_CONNECT_TIMEOUT", 2.0),
        default_ttls=settings.default_ttls,
    )


#: The registered backends, in the order ``MEMORY_BACKEND=auto`` tries them.
BACKENDS: Mapping[str, BackendSpec] = {
    spec.choice: spec
    for spec in (
        BackendSpec("ams", "agent-memory-server", "ams", "AGENT_MEMORY_SERVER_URL", _ams, _ams_target),
        BackendSpec("redis", "redis", "redis", "REDIS_URL", _redis, _redis_target),
        BackendSpec("inmemory", "in-memory", None, None, _inmemory),
    )
}

#: Values accepted by ``MEMORY_BACKEND`` (and ``--backend``).
BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)


def choose_backend(env: Mapping[str, str]) -> BackendSpec:
    """The backend ``MEMORY_BACKEND`` names, or under ``auto`` the first whose selecting
    variable is set (else the in-process one).

    Raises:
        ConfigurationError: ``MEMORY_BACKEND`` is not one of :data:`BACKEND_CHOICES`.
    """
    raw = env.get("MEMORY_BACKEND") or "auto"
    choice = raw.strip().lower().replace("-", "").replace("_", "")
    if choice == "auto":
        for spec in BACKENDS.values():
            if spec.selected_by is None or (env.get(spec.selected_by) or "").strip():
                return spec
    spec = BACKENDS.get(choice)  # type: ignore[assignment]
    if spec is None:
        raise ConfigurationError(f"MEMORY_BACKEND={raw!r} is not supported; accepted: {', '.join(BACKEND_CHOICES)}")
    return spec


def backend_from_env(env: Mapping[str, str]) -> MemoryBackend:
    """The backend the environment describes (see the module docstring), wrapped in a
    :class:`~primitives.memory.resilient.ResilientBackend` when it is a server backend and
    ``MEMORY_RESILIENT`` is not off. Nothing connects here.

    Raises:
        ConfigurationError: a variable has a value that is not accepted, a server backend
            without its URL, or the extra it needs is not installed.
        OutboxError: the outbox file or its directory cannot be used (the message names the
            file and the fix).
    """
    spec = choose_backend(env)
    settings = BackendSettings(
        working_memory_size=env_int(env, "MEMORY_WORKING_MEMORY_SIZE", 50),
        default_ttls=default_ttls_from_env(env),
    )
    backend = spec.build(env, settings)
    if spec.target is not None and (env.get("MEMORY_RESILIENT") or "1").strip().lower() not in _OFF:
        from primitives.memory.resilient import Outbox, ResilientBackend
        from primitives.memory.resilient.identity import outbox_identity, outbox_path, redact_url

        url, prefix = spec.target(env)
        outbox = Outbox(
            outbox_path(env, url, prefix),
            identity=outbox_identity(url, prefix),
            target=redact_url(url),
            prefix=prefix,
        )
        backend = ResilientBackend(backend, outbox=outbox)
    return backend


def _extra_needed(what: str, extra: str, exc: ImportError) -> str:
    """One line naming the extra to install, whatever the import failure said."""
    text = str(exc)
    if f"memory-primitives[{extra}]" in text:
        return text
    return f"{what} needs the {extra} extra: pip install 'memory-primitives[{extra}]' ({text})"
