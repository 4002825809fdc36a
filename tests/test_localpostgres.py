"""The local PostgreSQL server itself (``LocalPostgres``), against real processes: connect, write
and read; two servers at once; stop and restart on a kept data directory; recovery after SIGKILL;
the typed errors for missing binaries, a taken port and a data directory already in use."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest

from primitives.errors import PrimitivesError
from primitives.tooling.localpostgres import LocalPostgres, LocalPostgresError, find_postgres
from tests.postgres_server import kept_data_dir, running_postgres, start_postgres
from tests.redis_server import unavailable

# --- no server -------------------------------------------------------------------------------


def test_missing_binaries_raise_a_typed_error_with_the_install_command(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    server = LocalPostgres(dir=tmp_path / "data", bin_dir=empty)
    with pytest.raises(LocalPostgresError, match=r"apt-get install .*postgresql") as caught:
        server.start()
    assert isinstance(caught.value, PrimitivesError) and isinstance(caught.value, RuntimeError)
    assert str(empty) in str(caught.value) and "initdb" in str(caught.value)
    assert not (tmp_path / "data").exists(), "nothing is created before the binaries are found"
    assert server.running() is False and server.pid() is None and server.stop() is False


def test_the_url_percent_encodes_its_parts() -> None:
    server = LocalPostgres(port=5433, user="a b", password="p@ss/w:rd'", database="my db")
    assert server.url == "postgresql://a%20b:p%40ss%2Fw%3Ard%27@127.0.0.1:5433/my%20db"
    assert LocalPostgres(port=5433).password != LocalPostgres(port=5433).password  # random, 32 hex
    with pytest.raises(LocalPostgresError, match="database must not be empty"):
        LocalPostgres(database="")


# --- real servers ----------------------------------------------------------------------------


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.integration
def test_connect_create_insert_select(postgres_server: LocalPostgres) -> None:
    assert postgres_server.running() and postgres_server.pid() is not None
    with psycopg.connect(postgres_server.url) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes (body) VALUES (%s), (%s)", ["first", "it's \"second\""])
        conn.commit()
        rows = conn.execute("SELECT body FROM notes ORDER BY id").fetchall()
        user, db, listen, fsync = conn.execute(
            "SELECT current_user, current_database(), current_setting('listen_addresses'),"
            " current_setting('fsync')"
        ).fetchone()
        conn.execute("DROP TABLE notes")
        conn.commit()
    assert rows == [("first",), ("it's \"second\"",)]
    assert (user, db, listen, fsync) == ("primitives", "primitives", "127.0.0.1", "off")


@pytest.mark.integration
def test_a_wrong_password_is_refused(postgres_server: LocalPostgres) -> None:
    wrong = postgres_server.url.replace(postgres_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=10)


@pytest.mark.integration
def test_two_servers_at_once_are_separate(postgres_server: LocalPostgres, tmp_path: Path) -> None:
    for other in running_postgres(tmp_path, user="second", database="other"):
        assert other.port != postgres_server.port and other.dir != postgres_server.dir
        with psycopg.connect(other.url) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
        assert _rows(other.url, "SELECT to_regclass('only_here') IS NOT NULL") == [(True,)]
        assert _rows(postgres_server.url, "SELECT to_regclass('only_here') IS NOT NULL") == [(False,)]
        assert _rows(other.url, "SELECT current_user, current_database()") == [("second", "other")]


@pytest.mark.integration
def test_stop_and_restart_on_a_kept_dir_keeps_the_data(tmp_path: Path) -> None:
    with kept_data_dir(tmp_path) as data:
        first = start_postgres(data)
        try:
            with psycopg.connect(first.url) as conn:
                conn.execute("CREATE TABLE kept (x int)")
                conn.execute("INSERT INTO kept VALUES (42)")
            with pytest.raises(LocalPostgresError, match="already runs on"):
                LocalPostgres(dir=data).start()
        finally:
            assert first.stop() is True
        assert not first.running() and first.pid() is None and first.stop() is False
        assert (data / "PG_VERSION").exists(), "stop() keeps a given data directory"
        # A new server object: another port and password, same data.
        second = start_postgres(data)
        try:
            assert second.port != first.port or second.password != first.password
            assert _rows(second.url, "SELECT x FROM kept") == [(42,)]
        finally:
            second.stop()


@pytest.mark.integration
def test_start_recovers_after_sigkill(tmp_path: Path) -> None:
    with kept_data_dir(tmp_path) as data:
        first = start_postgres(data)
        try:
            with psycopg.connect(first.url) as conn:
                conn.execute("CREATE TABLE survived (x int)")
                conn.execute("INSERT INTO survived VALUES (1), (2)")
            first.kill()
            assert first.pid() is None and not first.running()
            assert (data / "postmaster.pid").exists(), "a killed server leaves its lock file"
        finally:
            if first.pid() is not None:
                first.stop()
        second = start_postgres(data)
        try:
            assert _rows(second.url, "SELECT x FROM survived ORDER BY x") == [(1,), (2,)]
            assert "database system was interrupted" in second.logfile.read_text()
        finally:
            second.stop()


@pytest.mark.integration
def test_a_temporary_dir_is_removed_by_stop() -> None:
    server = start_postgres(None)
    try:
        assert server.temporary and (server.dir / "PG_VERSION").exists()
        assert _rows(server.url, "SELECT 1") == [(1,)]
    finally:
        server.stop()
    assert not server.dir.exists()


@pytest.mark.integration
def test_a_taken_port_is_a_typed_error(tmp_path: Path) -> None:
    try:
        find_postgres()
    except LocalPostgresError as exc:
        unavailable(str(exc))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with kept_data_dir(tmp_path) as data:
            server = LocalPostgres(dir=data, port=port, fsync=False)
            try:
                server.start()
            except LocalPostgresError as exc:
                assert f"port {port} is already in use" in str(exc)
            else:
                server.stop()
                pytest.fail("a server started on a port that is taken")
            assert server.pid() is None
