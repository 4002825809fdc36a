"""Change feed between agents (Redis pub/sub for notification, a capped stream for catch-up).
(Curated exports are filled in as the modules land.)"""

__all__: list[str] = []
