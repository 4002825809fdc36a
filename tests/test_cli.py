"""The command line: ``eval locomo`` end to end on a real conversation, ``bench inmemory``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from primitives.cli import main

PLAIN_BM25_RECALL_AT_10 = 0.547  # DESIGN.md's reference: plain BM25 over raw turn text


def test_eval_locomo_on_one_conversation(locomo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copy(locomo_dir / "26.json", tmp_path / "26.json")
    assert main(["eval", "locomo", "--data", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "in-memory"
    assert report["conversations"] == 1
    assert report["turns"] == 419
    assert report["questions"] + report["questions_skipped"] == 199
    assert report["malformed_evidence"] == 1  # "D8:6; D9:17"
    assert set(report["recall_at_k"]) == {"5", "10"}
    assert report["recall_at_k"]["10"] > PLAIN_BM25_RECALL_AT_10
    assert report["recall_at_k"]["5"] <= report["recall_at_k"]["10"] <= 1
    assert set(report["recall_at_k_by_category"]) == {"multi-hop", "temporal", "open-domain", "single-hop", "adversarial"}
    assert report["ingest_per_s"] > 0
    assert 0 < report["search_ms"]["p50"] <= report["search_ms"]["p99"]
    assert report["degraded_calls"] == 0


def test_eval_counts_malformed_evidence_without_crashing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    conversation = {
        "speaker_a": "A",
        "speaker_b": "B",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "A", "dia_id": "D1:1", "text": "I bought a red bicycle"},
            {"speaker": "B", "dia_id": "D1:2", "text": "Nice! Where will you ride it?", "blip_caption": "a photo of a bike"},
        ],
        "session_2_date_time": "not a date",
        "qa": [
            {"question": "Who bought a bicycle?", "answer": "A", "evidence": ["D1:1"], "category": 4},
            {"question": "What colour was the bicycle?", "answer": "red", "evidence": ["D1:1", "D9:9", "D", "D1:1; D1:2"], "category": 1},
            {"question": "Nothing valid", "answer": "x", "evidence": ["D:1:1"], "category": 2},
            {"question": "No evidence", "adversarial_answer": "x", "category": 5},
        ],
    }
    (tmp_path / "tiny.json").write_text(json.dumps(conversation))
    assert main(["eval", "locomo", "--data", str(tmp_path), "--k", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["malformed_evidence"] == 4
    assert report["questions"] == 2 and report["questions_skipped"] == 2
    assert report["turns"] == 2
    assert report["recall_at_k"] == {"1": 1.0}


def test_eval_human_output_is_a_table(locomo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copy(locomo_dir / "30.json", tmp_path / "30.json")
    assert main(["eval", "locomo", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "recall@10" in out and "single-hop" in out and "in-memory" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "locomo", "--data", "/definitely/not/here"],
        ["eval", "locomo", "--data", ".", "--k", "0"],
    ],
)
def test_eval_bad_input_exits_2(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if argv[3] == ".":
        (tmp_path / "x.json").write_text(json.dumps({"qa": []}))
        argv = [*argv[:3], str(tmp_path), *argv[4:]]
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_eval_rejects_a_file_that_is_not_locomo(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["eval", "locomo", "--data", str(tmp_path)]) == 2


def test_bench_inmemory_with_baseline(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "inmemory", "--memories", "2000", "--queries", "100", "--baseline", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["memories"] == 2000
    assert report["add_us"] > 0 and report["add_one_us"] > 0
    assert 0 < report["search_ms"]["p50"] <= report["search_ms"]["p99"]
    # half the queries are built from stored words, half from words never stored
    assert report["hit_rate"] == 0.5
    assert report["baseline"]["hit_rate"] == 0.0  # substring search finds no natural-language question
    assert report["search_p50_speedup"] > 0
    assert "pipeline_overhead_us" in report and "rss_mb" in report


def test_ablation_ends_at_the_default_configuration(locomo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copy(locomo_dir / "30.json", tmp_path / "30.json")
    assert main(["eval", "locomo", "--data", str(tmp_path), "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert main(["eval", "locomo", "--data", str(tmp_path), "--ablation", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["variants"]
    assert len(rows) == 6
    assert rows[-1]["recall_at_k"] == default["recall_at_k"]
    assert rows[-1]["recall_at_k"]["10"] > rows[0]["recall_at_k"]["10"]
