"""Tooling around the library, not part of its runtime: local servers for tests and first use
(:mod:`~primitives.tooling.localredis`, :mod:`~primitives.tooling.localcluster`,
:mod:`~primitives.tooling.localams`) and the diagnosis behind ``memory-primitives doctor``
(:mod:`~primitives.tooling.doctor`)."""

__all__: list[str] = []
