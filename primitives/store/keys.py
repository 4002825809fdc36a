"""The key-value store's key scheme: ``{prefix}{namespace}:{entity}:{id}`` with every part
percent-encoded.

Each part goes through ``urllib.parse.quote(part, safe="")`` (RFC 3986 percent-encoding of the
UTF-8 bytes), which leaves only ``A-Z a-z 0-9 _ . ~ -`` and ``%XX``. So a part can never contain
the ``:`` separator, a glob character of ``SCAN MATCH`` (``* ? [ ] \\``), or a Redis Cluster hash
tag brace (``{ }``), and the encoding is reversible (:meth:`KeyScheme.split`). Example:
``KeyScheme().key("alice", "profile", "a*b:c")`` is ``"kv:alice:profile:a%2Ab%3Ac"``.

The prefix (default ``"kv:"``) is written as given; it is glob-escaped where it reaches a
``SCAN MATCH`` pattern.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final
from urllib.parse import quote, unquote

from primitives.errors import InvalidKeyError
from primitives.validation import check_text

__all__ = ["KeyScheme", "DEFAULT_PREFIX", "escape_part", "glob_escape"]

#: The default prefix of every key-value store key.
DEFAULT_PREFIX: Final = "kv:"

#: Error family of a bad key part (value error, type error): both :class:`InvalidKeyError`.
KEY_ERRORS: Final = (InvalidKeyError, InvalidKeyError)

_GLOB_SPECIALS: Final = frozenset("*?[]\\")


def escape_part(part: object, what: str = "key part") -> str:
    """``part`` percent-encoded for a key (see the module docstring).

    Args:
        part: A namespace, entity or id: a non-empty ``str`` that UTF-8 can encode (checked with
            :func:`primitives.validation.check_text`); any character is accepted and kept.
        what: How to name the part in the error message.

    Raises:
        InvalidKeyError: ``part`` is not a ``str``, is empty, or has a lone surrogate.
    """
    return quote(check_text(part, what, allow_empty=False, errors=KEY_ERRORS), safe="")


def glob_escape(text: str) -> str:
    """``text`` with the ``SCAN MATCH`` glob specials (``* ? [ ] \\``) backslash-escaped."""
    return "".join("\\" + c if c in _GLOB_SPECIALS else c for c in text)


@lru_cache(maxsize=4096)
def _scope(prefix: str, namespace: str, entity: str) -> str:
    # Namespaces and entities repeat across calls; ids rarely do, so only this part is cached.
    return f"{prefix}{escape_part(namespace, 'namespace')}:{escape_part(entity, 'entity')}:"


class KeyScheme:
    """Builds and splits key-value store keys.

    Args:
        prefix: Written in front of every key, as given. Default ``"kv:"``.

    Raises:
        InvalidKeyError: ``prefix`` is not a ``str`` or has a lone surrogate.
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = check_text(prefix, "key prefix", errors=KEY_ERRORS)

    def __repr__(self) -> str:
        return f"KeyScheme(prefix={self.prefix!r})"

    def key(self, namespace: str, entity: str, id: str) -> str:
        """The Redis key of ``(namespace, entity, id)``.

        Raises:
            InvalidKeyError: a part is not a non-empty ``str`` or has a lone surrogate.
        """
        if type(namespace) is not str or type(entity) is not str:
            # lru_cache would hash unhashable garbage before escape_part could name it
            escape_part(namespace, "namespace")
            escape_part(entity, "entity")
        if type(id) is str and id.isascii() and id.isalnum():  # nothing to encode (a hot path)
            return _scope(self.prefix, namespace, entity) + id
        return _scope(self.prefix, namespace, entity) + escape_part(id, "id")

    def namespace_prefix(self, namespace: str) -> str:
        """Every key of ``namespace`` starts with this string.

        Raises:
            InvalidKeyError: ``namespace`` is not a non-empty ``str`` or has a lone surrogate.
        """
        return f"{self.prefix}{escape_part(namespace, 'namespace')}:"

    def namespace_pattern(self, namespace: str) -> str:
        """A ``SCAN MATCH`` pattern matching exactly the keys of ``namespace``.

        Raises:
            InvalidKeyError: ``namespace`` is not a non-empty ``str`` UTF-8 can encode.
        """
        return glob_escape(self.namespace_prefix(namespace)) + "*"

    def split(self, key: str | bytes) -> tuple[str, str, str]:
        """``(namespace, entity, id)`` of a key made by :meth:`key`.

        Raises:
            InvalidKeyError: ``key`` does not start with the prefix or does not have three parts.
        """
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if not text.startswith(self.prefix):
            raise InvalidKeyError(f"key {text!r} does not start with prefix {self.prefix!r}")
        parts = text[len(self.prefix):].split(":")
        if len(parts) != 3 or not all(parts):
            raise InvalidKeyError(f"key {text!r} is not {self.prefix}namespace:entity:id")
        namespace, entity, id = (unquote(p, errors="strict") for p in parts)
        return namespace, entity, id
