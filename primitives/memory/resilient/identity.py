"""One outbox per store, however its URL is spelled.

An outbox holds writes that a store has not confirmed yet, so every writer to one store must find
the same outbox, whichever spelling of the URL it was given: ``redis://127.0.0.1:6379/0``,
``redis://localhost``, ``rediss://user:pw@[::1]:6379?db=0`` are one store. The identity of a
store is its server (host and port), its database (or the server's URL path) and its key prefix,
written as one canonical string:

==========================  ===============================================================
URL                         identity (before ``#prefix=<percent-encoded prefix>``)
==========================  ===============================================================
``redis://``, ``rediss://``  ``redis://<host>:<port>/<db>``; port 6379 by default; db from
                            ``?db=N``, else the path ``/N``, else 0 (the precedence redis-py
                            uses); user, password, TLS and other query arguments left out
``unix://``                 ``unix:<real path of the socket>?db=<N>`` (symlinks resolved)
``http://``, ``https://``   ``ams://<host>:<port><path>``; port 80 / 443 by default; the path
                            without trailing slashes; scheme, credentials and query left out
==========================  ===============================================================

Hosts are lower-cased, a trailing dot is dropped, IP addresses are normalised with
:mod:`ipaddress` (an IPv4-mapped IPv6 address is its IPv4 address; the numeric shorthands
``127.1`` and ``2130706433`` that ``getaddrinfo`` accepts are IPv4 addresses), and every loopback
spelling (``localhost``, any ``127.x.y.z``, ``::1``, ``::ffff:127.0.0.1``, the unspecified
``0.0.0.0`` and ``::``, which connect to this machine, and a URL without a host, which redis-py
sends to ``localhost``) is the one name ``localhost``.

Names are never resolved: the outbox is needed exactly while the network may be failing, so a
lookup would make the outbox's name depend on the outage. A DNS name and the address it resolves
to are therefore two identities (``redis://cache.internal`` and ``redis://10.0.0.5``), so are a
Unix socket and a TCP port of the same server, and so are two nodes of one Redis Cluster.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from primitives.errors import ConfigurationError

__all__ = ["LOOPBACK", "outbox_dir", "outbox_identity", "outbox_path", "redact_url"]

#: The one name of every loopback spelling.
LOOPBACK = "localhost"
_DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "http": 80, "https": 443}
# what inet_aton (hence getaddrinfo) reads as an IPv4 address: 127.1, 0x7f.1, 2130706433
_NUMERIC_V4 = re.compile(r"[0-9a-fx.]+\Z")
# query arguments that carry a secret, left out of a target URL written to disk
_SECRET_ARG = re.compile(r"pass|secret|token|auth|credential|api[-_]?key", re.IGNORECASE)


def outbox_identity(url: str, prefix: str) -> str:
    """The canonical identity of the store ``url`` and ``prefix`` name (see the module table).

    Args:
        url: A ``redis://``, ``rediss://`` or ``unix://`` URL (as redis-py reads it) or an
            ``http(s)://`` URL of an Agent Memory Server. Credentials are never part of the result.
        prefix: The key prefix (any string; it is percent-encoded into the identity, so two
            prefixes never give one identity).

    Returns:
        An ASCII string such as ``redis://localhost:6379/0#prefix=memory%3A``. Equal for every
        spelling of one server, database and prefix; different when any of them differs.

    Raises:
        ConfigurationError: the scheme is none of the above, the port is not a number in
            0-65535, ``?db=`` is not a whole number, an HTTP URL has no host, or a ``unix://``
            URL has no socket path. The message shows the URL without its password.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        location = _redis_location(parts, scheme, url)
    elif scheme in ("http", "https"):
        if not parts.hostname:
            raise ConfigurationError(f"{redact_url(url)!r} has no host; expected http(s)://host[:port][/path]")
        path = unquote(parts.path).rstrip("/")
        location = f"ams://{_host(parts.hostname)}:{_port(parts, scheme, url)}{_quote(path, safe='/')}"
    else:
        raise ConfigurationError(
            f"{redact_url(url)!r} is not a store URL; accepted schemes: redis://, rediss://, unix:// "
            "(Redis) and http://, https:// (Agent Memory Server)"
        )
    return f"{location}#prefix={_quote(prefix, safe='')}"


def outbox_dir(env: Mapping[str, str]) -> Path:
    """The directory of the per-store outboxes: ``$XDG_CACHE_HOME/memory-primitives``, or
    ``~/.cache/memory-primitives`` when ``XDG_CACHE_HOME`` is unset, empty or relative (as the XDG
    base directory specification says)."""
    cache = env.get("XDG_CACHE_HOME") or ""
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "memory-primitives"


def outbox_path(env: Mapping[str, str], url: str, prefix: str) -> Path:
    """Where the outbox of a store lives: ``MEMORY_OUTBOX_PATH`` when it is set (``~`` expanded;
    the URL is then not parsed), else ``outbox-<h>.sqlite3`` in :func:`outbox_dir`, where ``<h>``
    is the first 16 hex digits of the SHA-256 of :func:`outbox_identity`.

    Raises:
        ConfigurationError: as :func:`outbox_identity`, when ``MEMORY_OUTBOX_PATH`` is not set.
    """
    explicit = env.get("MEMORY_OUTBOX_PATH")
    if explicit:
        return Path(explicit).expanduser()
    digest = hashlib.sha256(outbox_identity(url, prefix).encode("ascii")).hexdigest()[:16]
    return outbox_dir(env) / f"outbox-{digest}.sqlite3"


def redact_url(url: str) -> str:
    """``url`` without its password (the user name is kept) and without query arguments whose
    name suggests a secret (``password``, ``token``, ``auth``, ``secret``, ``api_key``...); safe
    to write to disk and to print. Everything else is kept as spelled."""
    parts = urlsplit(url.strip())
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = parts.query
    if query:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not _SECRET_ARG.search(k)]
        query = urlencode(kept)
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, ""))


def _redis_location(parts: SplitResult, scheme: str, url: str) -> str:
    """``redis://host:port/db`` or ``unix:path?db=N`` the way redis-py's ``parse_url`` reads the
    URL: ``?db=`` wins over the path; a path that is not a number means database 0."""
    db_arg = parse_qs(parts.query).get("db")
    db = 0
    if db_arg:
        try:
            db = int(db_arg[0])
        except ValueError:
            raise ConfigurationError(f"db={db_arg[0]!r} in {redact_url(url)!r} is not a whole number") from None
    if scheme == "unix":
        if not parts.path:
            raise ConfigurationError(f"{redact_url(url)!r} has no socket path; expected unix:///path/to/redis.sock")
        real = os.path.realpath(unquote(parts.path))
        return f"unix:{quote(os.fsencode(real), safe='/')}?db={db}"
    if not db_arg and parts.path:
        try:
            db = int(unquote(parts.path).replace("/", ""))
        except ValueError:
            db = 0  # what redis-py does with such a path
    return f"redis://{_host(parts.hostname)}:{_port(parts, scheme, url)}/{db}"


def _port(parts: SplitResult, scheme: str, url: str) -> int:
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"the port in {redact_url(url)!r} is not a number in 0-65535") from None
    return port or _DEFAULT_PORTS[scheme]  # redis-py reads port 0 as the default


def _host(hostname: str | None) -> str:
    """The canonical host: ``localhost`` for loopback, a normalised IP (IPv6 in brackets), or
    the lower-cased DNS name without its trailing dot (never resolved)."""
    host = unquote(hostname or "").lower().rstrip(".")
    if not host or host == LOOPBACK:
        return LOOPBACK
    address = _ip_address(host)
    if address is None:
        return _quote(host, safe="-._~!$&'()*+,;=")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified:
        return LOOPBACK
    return f"[{_quote(str(address), safe=':')}]" if address.version == 6 else str(address)


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_V4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None  # a DNS name made of hex letters ("cafe.be")
    return None


def _quote(text: str, *, safe: str) -> str:
    return quote(text, safe=safe, errors="surrogatepass")
