"""Security against real servers: TLS (``rediss://`` with a CA and certificates made in the test by
trustme) and ACL users restricted to one namespace's keys.

The ACL rules are the ones docs/security-and-cluster.md gives: a user per namespace, allowed only
the key-value store's keys of that namespace (``~kv:<percent-encoded namespace>:*``) and no pub/sub
channel, every command but the ``@dangerous`` ones.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from primitives.errors import AuthenticationFailedError, BackendUnavailableError, PermissionDeniedError
from primitives.redis_connection import connect, redis_errors_mapped

pytestmark = pytest.mark.integration

#: Namespaces that would reach another namespace's keys, or widen a key pattern, if not escaped.
HOSTILE_NAMESPACES = [
    "alice*", "alice:x", "alice:*", "al?ce", "alic[e]", "{alice}", "alice\n", "alice ", "ålice", "alice\\",
]


def kv_key(namespace: str, entity: str, id: str, prefix: str = "kv:") -> str:
    """The key-value store's key scheme, written out here so these tests stand alone:
    ``{prefix}{namespace}:{entity}:{id}`` with each part percent-encoded (``quote(part, safe="")``)."""
    return prefix + ":".join(quote(part, safe="") for part in (namespace, entity, id))


def namespace_acl_rules(namespace: str, password: str, prefix: str = "kv:") -> list[str]:
    """``ACL SETUSER`` rules for a user who may use only ``namespace``'s key-value keys.

    The encoded namespace holds only ``A-Z a-z 0-9 _ . ~ - %``: no glob character can reach the
    pattern, and ``:`` ends it, so ``alice`` never matches ``alice2`` or ``alice%3Ax``.
    """
    return [
        "reset", "on", f">{password}",
        f"~{prefix}{quote(namespace, safe='')}:*",
        "resetchannels", "+@all", "-@dangerous",
    ]


@dataclass
class User:
    name: str
    namespace: str
    url: str


async def make_user(admin, acl_redis_server, namespace: str) -> User:
    name = "u-" + secrets.token_hex(6)
    password = secrets.token_hex(12)
    assert await admin.execute_command("ACL", "SETUSER", name, *namespace_acl_rules(namespace, password)) == b"OK"
    return User(name, namespace, acl_redis_server.user_url(name, password))


@pytest.fixture
async def admin(acl_redis_server) -> AsyncIterator:
    client = connect(acl_redis_server.url)
    await client.flushdb()  # each test starts from an empty server (it serves only ACL tests)
    made_before = set(await client.execute_command("ACL", "USERS"))
    yield client
    for user in set(await client.execute_command("ACL", "USERS")) - made_before:
        await client.execute_command("ACL", "DELUSER", user)
    await client.aclose()


async def call(client, *args):
    async with redis_errors_mapped("Redis"):
        return await client.execute_command(*args)


# --- TLS ---------------------------------------------------------------------------------------


async def test_tls_round_trip_with_the_test_ca(tls_redis_server) -> None:
    client = connect(tls_redis_server.url, ssl_ca_certs=str(tls_redis_server.ca_file))
    try:
        key = "tls:" + secrets.token_hex(4)
        assert await call(client, "SET", key, "über TLS") is True
        assert await call(client, "GET", key) == "über TLS".encode()
        # the connection really is TLS: the server counts it on its TLS port
        info = await client.execute_command("CLIENT", "INFO")
        assert f"laddr=127.0.0.1:{tls_redis_server.server.tls_port}".encode() in info
    finally:
        await client.aclose()


async def test_tls_ca_can_be_given_in_the_url(tls_redis_server) -> None:
    client = connect(f"{tls_redis_server.url}?ssl_ca_certs={tls_redis_server.ca_file}")
    try:
        assert await call(client, "PING") is True
    finally:
        await client.aclose()


async def test_a_client_without_the_ca_is_refused_with_a_typed_error(tls_redis_server) -> None:
    client = connect(tls_redis_server.url)  # system CAs only: the test CA is unknown
    try:
        with pytest.raises(BackendUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            await call(client, "PING")
    finally:
        await client.aclose()


async def test_a_client_trusting_another_ca_is_refused(tls_redis_server, tmp_path: Path) -> None:
    import trustme

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    client = connect(tls_redis_server.url, ssl_ca_certs=str(other))
    try:
        with pytest.raises(BackendUnavailableError, match="certificate verify failed"):
            await call(client, "PING")
    finally:
        await client.aclose()


async def test_plain_redis_to_the_tls_port_is_refused(tls_redis_server) -> None:
    client = connect(tls_redis_server.url.replace("rediss://", "redis://"), socket_timeout=5)
    try:
        with pytest.raises(BackendUnavailableError):
            await call(client, "PING")
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def mutual_tls_server(tmp_path_factory: pytest.TempPathFactory):
    """A TLS server that requires a client certificate (``tls-auth-clients yes``)."""
    from tests.redis_server import running_tls

    yield from running_tls(tmp_path_factory.mktemp("redis-mtls"), auth_clients="yes")


async def test_mutual_tls_needs_a_client_certificate(mutual_tls_server) -> None:
    ca = str(mutual_tls_server.ca_file)
    without = connect(mutual_tls_server.url, ssl_ca_certs=ca, socket_timeout=5)
    with_cert = connect(
        mutual_tls_server.url,
        ssl_ca_certs=ca,
        ssl_certfile=str(mutual_tls_server.client_cert_file),
        ssl_keyfile=str(mutual_tls_server.client_key_file),
    )
    try:
        with pytest.raises(BackendUnavailableError):
            await call(without, "PING")
        assert await call(with_cert, "PING") is True
    finally:
        await without.aclose()
        await with_cert.aclose()


# --- ACL users per namespace -------------------------------------------------------------------


async def test_a_namespace_user_reads_and_writes_its_own_namespace_only(admin, acl_redis_server) -> None:
    alice = await make_user(admin, acl_redis_server, "alice")
    bob_key, alice_key = kv_key("bob", "profile", "1"), kv_key("alice", "profile", "1")
    await admin.set(bob_key, "bob's")
    client = connect(alice.url)
    try:
        assert await call(client, "SET", alice_key, "alice's") is True
        assert await call(client, "GET", alice_key) == b"alice's"
        with pytest.raises(PermissionDeniedError, match="(?i)no permissions"):
            await call(client, "GET", bob_key)
        with pytest.raises(PermissionDeniedError):
            await call(client, "SET", bob_key, "overwritten by alice")
        with pytest.raises(PermissionDeniedError):
            await call(client, "UNLINK", bob_key)
        # a multi-key command touching one foreign key is refused as a whole
        with pytest.raises(PermissionDeniedError):
            await call(client, "MGET", alice_key, bob_key)
        # dangerous commands are refused whatever the keys
        with pytest.raises(PermissionDeniedError):
            await call(client, "FLUSHALL")
        with pytest.raises(PermissionDeniedError):
            await call(client, "KEYS", "*")
        assert await admin.get(bob_key) == b"bob's"
    finally:
        await client.aclose()


async def test_scan_lists_only_what_the_user_may_then_read(admin, acl_redis_server) -> None:
    """SCAN is not key-checked by ACL (it lists key names): the rules protect values, not names.
    Deleting a namespace by SCAN + UNLINK still cannot remove a foreign key."""
    alice = await make_user(admin, acl_redis_server, "alice")
    foreign = kv_key("bob", "note", secrets.token_hex(4))
    await admin.set(foreign, "bob's")
    client = connect(alice.url)
    try:
        names = [k async for k in client.scan_iter(match="kv:*", count=1000)]
        assert foreign.encode() in names
        with pytest.raises(PermissionDeniedError):
            await call(client, "UNLINK", foreign)
        assert await admin.exists(foreign) == 1
    finally:
        await client.aclose()


@pytest.mark.parametrize("hostile", HOSTILE_NAMESPACES)
async def test_a_hostile_namespace_cannot_reach_inside_alices_pattern(admin, acl_redis_server, hostile) -> None:
    """alice's own client asked to write namespace ``alice*``, ``alice:x``, ...: the percent-encoded
    key lies outside ``~kv:alice:*``, so the ACL refuses it and nothing is written."""
    alice = await make_user(admin, acl_redis_server, "alice")
    key = kv_key(hostile, "profile", "1")
    assert not key.startswith("kv:alice:")
    client = connect(alice.url)
    try:
        with pytest.raises(PermissionDeniedError):
            await call(client, "SET", key, "escaped")
        assert await admin.exists(key) == 0
    finally:
        await client.aclose()


@pytest.mark.parametrize("hostile", HOSTILE_NAMESPACES)
async def test_a_user_of_a_hostile_namespace_cannot_reach_alice(admin, acl_redis_server, hostile) -> None:
    """A user made for namespace ``alice*`` (or ``alice:x``, ...) by the same rule: its pattern is
    built from the encoded name, so it holds no glob character and matches only its own keys."""
    mallory = await make_user(admin, acl_redis_server, hostile)
    alices = kv_key("alice", "profile", "1")
    await admin.set(alices, "alice's")
    client = connect(mallory.url)
    try:
        own = kv_key(hostile, "profile", "1")
        assert await call(client, "SET", own, "mine") is True
        assert await call(client, "GET", own) == b"mine"
        with pytest.raises(PermissionDeniedError):
            await call(client, "GET", alices)
        with pytest.raises(PermissionDeniedError):
            await call(client, "SET", alices, "taken")
        assert await admin.get(alices) == b"alice's"
    finally:
        await client.aclose()


async def test_without_encoding_the_pattern_would_leak(admin, acl_redis_server) -> None:
    """Why the encoding matters: a rule written from the raw name ``al*`` would match
    ``kv:alice:...``; the encoded rule does not."""
    raw_pw = secrets.token_hex(8)
    await admin.execute_command(
        "ACL", "SETUSER", "raw-rule", "reset", "on", f">{raw_pw}", "~kv:al*:*", "+@all", "-@dangerous"
    )
    encoded = await make_user(admin, acl_redis_server, "al*")
    alices = kv_key("alice", "profile", "1")
    await admin.set(alices, "alice's")
    raw = connect(acl_redis_server.user_url("raw-rule", raw_pw))
    safe = connect(encoded.url)
    try:
        assert await call(raw, "GET", alices) == b"alice's"  # the leak
        with pytest.raises(PermissionDeniedError):
            await call(safe, "GET", alices)
    finally:
        await raw.aclose()
        await safe.aclose()


async def test_a_namespace_user_has_no_pubsub_channel(admin, acl_redis_server) -> None:
    alice = await make_user(admin, acl_redis_server, "alice")
    client = connect(alice.url)
    try:
        with pytest.raises(PermissionDeniedError):
            await call(client, "PUBLISH", "anything", "x")
    finally:
        await client.aclose()


async def test_wrong_password_is_an_authentication_error(acl_redis_server) -> None:
    client = connect(acl_redis_server.user_url("default", "not-the-password"))
    try:
        with pytest.raises(AuthenticationFailedError):
            await call(client, "PING")
    finally:
        await client.aclose()


async def test_an_acl_user_over_tls(tls_redis_server) -> None:
    """ACL users and TLS together: ``rediss://user:password@host:port``."""
    ca = str(tls_redis_server.ca_file)
    admin = connect(tls_redis_server.url, ssl_ca_certs=ca)
    name, password = "tls-" + secrets.token_hex(4), secrets.token_hex(12)
    try:
        await admin.execute_command("ACL", "SETUSER", name, *namespace_acl_rules("alice", password))
        user_url = tls_redis_server.url.replace("rediss://", f"rediss://{name}:{password}@")
        client = connect(user_url, ssl_ca_certs=ca)
        try:
            assert await call(client, "SET", kv_key("alice", "e", "1"), "v") is True
            with pytest.raises(PermissionDeniedError):
                await call(client, "GET", kv_key("bob", "e", "1"))
        finally:
            await client.aclose()
    finally:
        await admin.execute_command("ACL", "DELUSER", name)
        await admin.aclose()


# --- ACL and the change feed -------------------------------------------------------------------

#: What an agent needs for the change feed (default prefix ``memory:``): the stream key and the
#: pub/sub channel, both ``memory:changes``.
FEED_RULES = ["~memory:changes", "&memory:changes"]


def _event(namespace: str = "alice", origin: str = "agent-a"):
    from datetime import datetime, timezone

    from primitives.sync.feed import ChangeEvent

    return ChangeEvent(
        id="rec-" + secrets.token_hex(4), op="upsert", namespace=namespace, user_id=None,
        memory_type="episodic", updated_at=datetime.now(timezone.utc), origin=origin,
    )


async def _feed_user(admin, acl_redis_server, *rules: str) -> str:
    name, password = "feed-" + secrets.token_hex(4), secrets.token_hex(12)
    await admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules, "+@all", "-@dangerous")
    return acl_redis_server.user_url(name, password)


async def test_agents_with_the_feed_rules_publish_and_hear_each_other(admin, acl_redis_server) -> None:
    from primitives.sync.feed_redis import RedisChangeFeed

    rules = [f"~kv:{quote('alice', safe='')}:*", *FEED_RULES]
    writer = RedisChangeFeed.from_url(await _feed_user(admin, acl_redis_server, *rules))
    reader = RedisChangeFeed.from_url(await _feed_user(admin, acl_redis_server, *FEED_RULES))
    try:
        subscription = reader.subscribe(after="$", exclude_origin="agent-b")
        await subscription.start()
        event = _event()
        (position,) = await writer.publish([event])
        heard = await subscription.__anext__()
        assert (heard.id, heard.position) == (event.id, position)
        await subscription.aclose()
    finally:
        await writer.aclose()
        await reader.aclose()


@pytest.mark.parametrize("rules", [["resetchannels"], ["&memory:changes"]], ids=["nothing", "channel-only"])
async def test_the_feed_without_its_stream_key_is_refused_and_writes_nothing(admin, acl_redis_server, rules) -> None:
    from primitives.sync.feed_redis import RedisChangeFeed

    before = await admin.xlen("memory:changes")
    feed = RedisChangeFeed.from_url(await _feed_user(admin, acl_redis_server, "~kv:alice:*", *rules))
    try:
        with pytest.raises(PermissionDeniedError):
            await feed.publish([_event()])
        assert feed.pending == 0  # an ACL refusal is not kept for a retry
        with pytest.raises(PermissionDeniedError):
            await feed.subscribe(after="0").start()
    finally:
        await feed.aclose()
    assert await admin.xlen("memory:changes") == before


async def test_subscribing_needs_the_channel(admin, acl_redis_server) -> None:
    from primitives.sync.feed_redis import RedisChangeFeed

    feed = RedisChangeFeed.from_url(await _feed_user(admin, acl_redis_server, "~memory:changes", "resetchannels"))
    try:
        with pytest.raises(PermissionDeniedError, match="channel"):
            await feed.subscribe(after="0").start()
    finally:
        await feed.aclose()


async def test_publishing_without_the_channel_is_a_permission_error(admin, acl_redis_server) -> None:
    from primitives.sync.feed_redis import RedisChangeFeed

    feed = RedisChangeFeed.from_url(await _feed_user(admin, acl_redis_server, "~memory:changes", "resetchannels"))
    try:
        with pytest.raises(PermissionDeniedError, match="channel"):
            await feed.publish([_event()])
    finally:
        await feed.aclose()


async def test_the_change_feed_over_tls(tls_redis_server) -> None:
    from primitives.sync.feed_redis import RedisChangeFeed

    ca = str(tls_redis_server.ca_file)
    writer = RedisChangeFeed.from_url(tls_redis_server.url, prefix="tls-feed:", ssl_ca_certs=ca)
    reader = RedisChangeFeed.from_url(tls_redis_server.url, prefix="tls-feed:", ssl_ca_certs=ca)
    try:
        subscription = reader.subscribe(after="$", exclude_origin="agent-b")
        await subscription.start()
        event = _event()
        (position,) = await writer.publish([event])
        heard = await subscription.__anext__()
        assert (heard.id, heard.origin, heard.position) == (event.id, "agent-a", position)
        assert [e.id for e in await reader.read("0")][-1] == event.id
        await subscription.aclose()
    finally:
        await writer.aclose()
        await reader.aclose()


# --- the same rules through RedisKeyValueStore -------------------------------------------------


async def test_the_key_value_store_over_tls(tls_redis_server) -> None:
    from primitives.store.kv_redis import RedisKeyValueStore

    client = connect(tls_redis_server.url, ssl_ca_certs=str(tls_redis_server.ca_file))
    try:
        store = RedisKeyValueStore(client, namespace="tls")
        value = {"text": "ünïcode over TLS", "n": [1, 2.5, None], "big": "x" * 4096}  # compressed
        assert await store.set("profile", "1", value, ttl=60) is True
        assert await store.get("profile", "1") == value
        assert await store.mget("profile", ["1", "missing"]) == [value, None]
        assert await store.delete_namespace() == 1
    finally:
        await client.aclose()


async def test_a_namespace_user_through_the_key_value_store(admin, acl_redis_server) -> None:
    from primitives.store.kv_redis import RedisKeyValueStore

    alice = await make_user(admin, acl_redis_server, "alice")
    bobs = RedisKeyValueStore(admin, namespace="bob")
    await bobs.set("profile", "1", {"name": "bob"})
    client = connect(alice.url)
    try:
        store = RedisKeyValueStore(client, namespace="alice")
        await store.set("profile", "1", {"name": "alice"}, ttl=60)
        await store.mset("profile", {"2": 2, "3": 3})
        assert await store.get("profile", "1") == {"name": "alice"}
        assert await store.mget("profile", ["1", "2", "3"]) == [{"name": "alice"}, 2, 3]
        assert 0 < await store.ttl("profile", "1") <= 60
        with pytest.raises(PermissionDeniedError):
            await store.get("profile", "1", namespace="bob")
        with pytest.raises(PermissionDeniedError):
            await store.set("profile", "1", "taken", namespace="bob")
        with pytest.raises(PermissionDeniedError):
            await store.delete("profile", "1", namespace="bob")
        # SCAN finds bob's keys, UNLINK is refused: nothing of bob's goes
        with pytest.raises(PermissionDeniedError):
            await store.delete_namespace("bob")
        assert await bobs.get("profile", "1") == {"name": "bob"}
        assert await store.delete_namespace() == 3
    finally:
        await client.aclose()
        await bobs.delete_namespace()


@pytest.mark.parametrize("hostile", HOSTILE_NAMESPACES)
async def test_a_hostile_namespace_in_the_key_value_store_stays_outside_alices_rule(
    admin, acl_redis_server, hostile
) -> None:
    from primitives.store.kv_redis import RedisKeyValueStore

    alice = await make_user(admin, acl_redis_server, "alice")
    mallory = await make_user(admin, acl_redis_server, hostile)
    await RedisKeyValueStore(admin, namespace="alice").set("profile", "1", "alice's")
    alice_client, mallory_client = connect(alice.url), connect(mallory.url)
    try:
        # alice's client, told to use the hostile namespace, is refused and writes nothing
        with pytest.raises(PermissionDeniedError):
            await RedisKeyValueStore(alice_client, namespace=hostile).set("profile", "1", "escaped")
        assert await RedisKeyValueStore(admin, namespace=hostile).exists("profile", "1") is False
        # the hostile namespace's own user works in its namespace and cannot read alice's
        theirs = RedisKeyValueStore(mallory_client, namespace=hostile)
        await theirs.set("profile", "1", "mine")
        assert await theirs.get("profile", "1") == "mine"
        with pytest.raises(PermissionDeniedError):
            await theirs.get("profile", "1", namespace="alice")
        assert await theirs.delete_namespace() == 1
    finally:
        await alice_client.aclose()
        await mallory_client.aclose()
        await RedisKeyValueStore(admin, namespace="alice").delete_namespace()


async def test_a_namespace_user_through_session_history(admin, acl_redis_server) -> None:
    """SessionHistory keys are ``primitives:session:{<ns>:<sid>}:...`` (both parts encoded): the
    rule ``~primitives:session:{alice:*`` (``{`` is no glob character) gives alice her sessions."""
    from primitives.store.session_redis import SessionHistory

    name, password = "sess-" + secrets.token_hex(4), secrets.token_hex(12)
    await admin.execute_command(
        "ACL", "SETUSER", name, "reset", "on", f">{password}", "~primitives:session:{alice:*",
        "resetchannels", "+@all", "-@dangerous",
    )
    client = connect(acl_redis_server.user_url(name, password))
    try:
        mine = SessionHistory(client, namespace="alice")
        await mine.append("s-1", [{"role": "user", "content": "hi"}])
        assert [m["content"] for m in await mine.read("s-1")] == ["hi"]
        for other in ["bob", "alice:x", "alice*", "{alice}"]:
            with pytest.raises(PermissionDeniedError):
                await SessionHistory(client, namespace=other).append("s-1", [{"role": "user", "content": "x"}])
    finally:
        await client.aclose()
