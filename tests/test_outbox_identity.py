"""One outbox per store however its URL is spelled: the spellings of one server, database and
prefix collide; another port, database, prefix or host never does (property tests)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from primitives.errors import ConfigurationError
from primitives.memory.resilient.identity import outbox_dir, outbox_identity, outbox_path, redact_url

def _numeric(host: str) -> bool:
    """Whether getaddrinfo would read ``host`` as an IPv4 address (``0x7f.1``, ``10.1``)."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


LOOPBACK_SPELLINGS = [
    "localhost", "LOCALHOST", "localhost.", "127.0.0.1", "127.0.0.2", "127.255.255.254", "127.1",
    "2130706433", "0x7f.1", "[::1]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]", "0.0.0.0", "[::]",
]


def test_the_spellings_of_the_reported_outage_share_one_outbox() -> None:
    env = {"XDG_CACHE_HOME": "/cache"}
    spellings = ["redis://127.0.0.1:6390/0", "redis://localhost:6390", "redis://127.0.0.1:6390",
                 "rediss://default:secret@[::1]:6390/?db=0", "redis://LocalHost:6390/"]
    assert len({outbox_path(env, url, "memory:") for url in spellings}) == 1
    assert outbox_identity(spellings[0], "memory:") == "redis://localhost:6390/0#prefix=memory%3A"
    path = outbox_path(env, spellings[0], "memory:")
    assert path.parent == Path("/cache/memory-primitives") and path.name.startswith("outbox-")
    assert len(path.name) == len("outbox-") + 16 + len(".sqlite3")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("redis://h:6379/3", "redis://h:6379?db=3"),
        ("redis://h/0?db=3", "redis://h/3"),  # ?db= wins over the path, as in redis-py
        ("redis://h/notanumber", "redis://h/0"),  # redis-py ignores such a path
        ("redis://h", "redis://h:0"),
        ("redis://Example.COM.:6379", "rediss://user@example.com"),
        ("redis://[2001:DB8:0:0::1]:7000", "redis://[2001:db8::1]:7000/0"),
        ("redis://[::ffff:10.1.2.3]", "redis://10.1.2.3"),
        ("redis://10.0.0.5?socket_timeout=5&password=x", "redis://:pw@10.0.0.5:6379/0"),
        ("redis://", "redis://localhost:6379"),
        ("http://localhost:8000/", "http://127.0.0.1:8000"),
        ("https://ams.example/api/", "https://AMS.example:443/api"),
        ("http://ams.example", "https://ams.example:80/"),  # the scheme is not part of the server
    ],
)
def test_spellings_of_one_store_collide(a: str, b: str) -> None:
    assert outbox_identity(a, "p") == outbox_identity(b, "p")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("redis://localhost:6379", "redis://localhost:6380"),
        ("redis://localhost/0", "redis://localhost/1"),
        ("redis://cache.internal", "redis://10.0.0.5"),  # never resolved
        ("redis://10.0.0.5", "redis://10.0.0.6"),
        ("redis://localhost", "unix:///tmp/redis.sock"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock?db=1"),
        ("http://ams.example", "https://ams.example"),  # ports 80 and 443
        ("http://ams.example/a", "http://ams.example/b"),
        ("redis://localhost:8000", "http://localhost:8000"),
    ],
)
def test_different_stores_do_not_collide(a: str, b: str) -> None:
    assert outbox_identity(a, "p") != outbox_identity(b, "p")


def test_unix_sockets_by_real_path(tmp_path: Path) -> None:
    real = tmp_path / "redis.sock"
    real.touch()
    link = tmp_path / "link.sock"
    link.symlink_to(real)
    a = outbox_identity(f"unix://{real}?db=2", "p")
    assert a == outbox_identity(f"unix://{link}?db=2", "p")
    assert a == outbox_identity(f"unix://{tmp_path}/./sub/../redis.sock?db=2&password=x", "p")
    assert a.startswith("unix:") and a != outbox_identity(f"unix://{real}", "p")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://h", "not a store URL"),
        ("localhost:6379", "not a store URL"),
        ("redis://:s3cret@h:99999", "port"),
        ("redis://:s3cret@h:port", "port"),
        ("redis://:s3cret@h?db=one", "db="),
        ("http:///path", "no host"),
        ("unix://", "socket path"),
    ],
)
def test_urls_that_name_no_store_are_configuration_errors(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as caught:
        outbox_identity(url, "p")
    assert "s3cret" not in str(caught.value)


def test_outbox_path_and_directory() -> None:
    assert outbox_path({"MEMORY_OUTBOX_PATH": "/x/o.sqlite3"}, "not even a url", "p") == Path("/x/o.sqlite3")
    assert outbox_path({"MEMORY_OUTBOX_PATH": "~/o.sqlite3"}, "", "p") == Path.home() / "o.sqlite3"
    assert outbox_dir({}) == Path.home() / ".cache" / "memory-primitives"
    assert outbox_dir({"XDG_CACHE_HOME": ""}) == Path.home() / ".cache" / "memory-primitives"
    assert outbox_dir({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "memory-primitives"
    assert outbox_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/memory-primitives")
    a = outbox_path({}, "redis://localhost", "a")
    assert a != outbox_path({}, "redis://localhost", "b") and a.parent == outbox_dir({})


def test_redact_url_drops_the_password_and_secret_arguments() -> None:
    assert redact_url("rediss://alice:p%40ss@h:6380/2?ssl_cert_reqs=none") == "rediss://alice@h:6380/2?ssl_cert_reqs=none"
    assert redact_url("redis://:pw@h/0") == "redis://h/0"
    assert redact_url("redis://h/0?password=x&db=1&token=t&api_key=k") == "redis://h/0?db=1"
    assert redact_url("http://ams.example:8000/") == "http://ams.example:8000/"


# -- properties -----------------------------------------------------------------------------------

labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10).filter(lambda s: not s.isdigit())
dns_names = st.lists(labels, min_size=1, max_size=3).map(".".join).filter(lambda h: h != "localhost" and not _numeric(h))
public_v4 = st.ip_addresses(v=4).filter(lambda a: not (a.is_loopback or a.is_unspecified))
public_v6 = st.ip_addresses(v=6).filter(
    lambda a: not (a.is_loopback or a.is_unspecified or a.ipv4_mapped is not None or a.scope_id)
)
servers = st.one_of(
    st.just(("loopback", None)),
    dns_names.map(lambda h: ("dns", h)),
    public_v4.map(lambda a: ("v4", a)),
    public_v6.map(lambda a: ("v6", a)),
)
stores = st.tuples(servers, st.integers(1, 65535), st.integers(0, 15), st.text(max_size=12))


@st.composite
def spelling(draw: st.DrawFn, store: tuple) -> str:
    """One of the many URLs that name ``store``."""
    (kind, host), port, db, _ = store
    if kind == "loopback":
        text = draw(st.sampled_from(LOOPBACK_SPELLINGS))
    elif kind == "dns":
        text = draw(st.sampled_from([host, host.upper(), host + ".", host.title()]))
    elif kind == "v4":
        text = draw(st.sampled_from([str(host), f"[::ffff:{host}]"]))
    else:
        text = f"[{draw(st.sampled_from([host.compressed, host.exploded, host.exploded.upper()]))}]"
    scheme = draw(st.sampled_from(["redis", "rediss"]))
    auth = draw(st.sampled_from(["", "user@", ":pw@", "user:p%40ss@"]))
    hostport = text if port == 6379 and draw(st.booleans()) else f"{text}:{port}"
    style = draw(st.sampled_from(["path", "query", "both"] + (["none"] if db == 0 else [])))
    path = {"path": f"/{db}", "query": "/", "both": f"/{db}", "none": draw(st.sampled_from(["", "/"]))}[style]
    args = [f"db={db}"] if style in ("query", "both") else []
    args += draw(st.sampled_from([[], ["socket_timeout=5"], ["password=pw"], ["health_check_interval=1"]]))
    return f"{scheme}://{auth}{hostport}{path}" + ("?" + "&".join(args) if args else "")


@given(st.data(), stores)
def test_every_spelling_of_one_store_has_one_identity(data: st.DataObject, store: tuple) -> None:
    prefix = store[3]
    urls = [data.draw(spelling(store)) for _ in range(4)]
    assert len({outbox_identity(u, prefix) for u in urls}) == 1, urls
    assert len({outbox_path({}, u, prefix) for u in urls}) == 1


@given(st.data(), stores, st.sampled_from(["server", "port", "db", "prefix"]))
def test_another_server_port_database_or_prefix_is_another_identity(data: st.DataObject, store: tuple, part: str) -> None:
    server, port, db, prefix = store
    other = data.draw(
        {
            "server": servers.filter(lambda s: _canonical(s) != _canonical(server)).map(lambda s: (s, port, db, prefix)),
            "port": st.integers(1, 65535).filter(lambda p: p != port).map(lambda p: (server, p, db, prefix)),
            "db": st.integers(0, 15).filter(lambda d: d != db).map(lambda d: (server, port, d, prefix)),
            "prefix": st.text(max_size=12).filter(lambda p: p != prefix).map(lambda p: (server, port, db, p)),
        }[part]
    )
    a = outbox_identity(data.draw(spelling(store)), prefix)
    b = outbox_identity(data.draw(spelling(other)), other[3])
    assert a != b


@given(st.text(), st.text())
def test_identity_is_ascii_and_prefix_is_injective(a: str, b: str) -> None:
    ia, ib = outbox_identity("redis://localhost", a), outbox_identity("redis://localhost", b)
    assert ia.isascii() and (ia == ib) == (a == b)


def _canonical(server: tuple) -> str:
    kind, host = server
    if kind == "loopback":
        return "loopback"
    if kind == "dns":
        return host.lower()
    return str(ipaddress.ip_address(host))


def test_module_has_no_dns_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("outbox_identity must not resolve names")

    monkeypatch.setattr("socket.getaddrinfo", refuse)
    monkeypatch.setattr("socket.gethostbyname", refuse)
    assert outbox_identity("redis://cache.internal:6379/1", "p") == "redis://cache.internal:6379/1#prefix=p"
    assert outbox_identity(f"unix://{quote(os.sep + 'tmp' + os.sep + 'r s.sock')}", "p").startswith("unix:/tmp/r%20s.sock")
