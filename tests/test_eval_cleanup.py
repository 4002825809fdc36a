"""``memory-primitives eval locomo --backend redis`` leaves nothing behind: after a run, and after
a run interrupted half-way (Ctrl-C), no key under the run's throw-away prefix remains (the
records, the index, the change feed's stream, working memory), checked by ``SCAN``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from primitives.cli import main

#: A tiny LoCoMo conversation: two sessions, hostile text, two questions.
CONVERSATION = {
    "session_1_date_time": "1:56 pm on 8 May, 2023",
    "session_1": [
        {"dia_id": "D1:1", "speaker": "Ana", "text": "I adopted a cat called Miso \x00 yesterday"},
        {"dia_id": "D1:2", "speaker": "Bo", "text": "@user_id:{alice} | * nice, ünïcødé 😀"},
        {"dia_id": "D1:3", "speaker": "Ana", "text": "She likes the blue bowl"},
    ],
    "session_2_date_time": "3:00 pm on 9 May, 2023",
    "session_2": [
        {"dia_id": "D2:1", "speaker": "Bo", "text": "I work as a nurse in Lisbon"},
        {"dia_id": "D2:2", "speaker": "Ana", "text": "Since when?"},
    ],
    "qa": [
        {"question": "What is the cat called?", "evidence": ["D1:1"], "category": 4},
        {"question": "Where does Bo work?", "evidence": ["D2:1"], "category": 4},
    ],
}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "tiny.json").write_text(json.dumps(CONVERSATION), encoding="utf-8")
    return tmp_path


@pytest.fixture
def on_redis(redis_server, monkeypatch) -> redis.Redis:
    for name in ("MEMORY_BACKEND", "MEMORY_REDIS_PREFIX", "MEMORY_OUTBOX_PATH", "MEMORY_EMBEDDINGS",
                 "MEMORY_EMBEDDINGS_URL", "MEMORY_REDIS_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def eval_keys(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(match="eval-*", count=1000))


@pytest.mark.integration
def test_a_redis_eval_leaves_no_key_behind(on_redis: redis.Redis, data: Path, capsys) -> None:
    assert eval_keys(on_redis) == []
    assert main(["eval", "locomo", "--data", str(data), "--backend", "redis", "--k", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "redis" and report["turns"] == 5 and report["questions"] == 2
    assert eval_keys(on_redis) == []
    assert [i for i in on_redis.execute_command("FT._LIST") if i.startswith(b"eval-")] == []


@pytest.mark.integration
def test_an_interrupted_redis_eval_leaves_no_key_behind(on_redis: redis.Redis, data: Path, monkeypatch) -> None:
    import primitives.cli.evaluate as cli_evaluate

    real = cli_evaluate.evaluate_locomo
    seen: dict[str, Any] = {"steps": 0, "keys": 0}

    async def interrupted(conversations: Any, factory: Any, **kwargs: Any) -> dict[str, Any]:
        def progress(n: int) -> None:
            seen["steps"] += n
            if seen["steps"] == 4:  # half-way through ingest: the store and the stream exist
                seen["keys"] = len(eval_keys(on_redis))
                raise KeyboardInterrupt

        return await real(conversations, factory, **{**kwargs, "progress": progress})

    monkeypatch.setattr(cli_evaluate, "evaluate_locomo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["eval", "locomo", "--data", str(data), "--backend", "redis", "--json"])
    assert seen["keys"] >= 2  # records and the change stream were there...
    assert eval_keys(on_redis) == []  # ...and are gone
