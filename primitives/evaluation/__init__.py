"""Retrieval-quality evaluation (LoCoMo) and benchmarks."""

from primitives.evaluation.locomo import evaluate_locomo, load_conversation, load_conversations

__all__ = ["evaluate_locomo", "load_conversation", "load_conversations"]
