"""Redis store primitives with in-process twins: key-value store, session history, rate limits,
caching; serialization. (Curated exports are filled in as the modules land.)"""

__all__: list[str] = []
