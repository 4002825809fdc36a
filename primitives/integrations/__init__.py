"""Adapters that put ``Memory`` where agents and their frameworks already are.

Each adapter is an optional extra, imported lazily: importing this package needs none of them.

- ``primitives.integrations.mcp``: the memory tools over the Model Context Protocol
  (``pip install 'memory-primitives[mcp]'``; ``memory-primitives mcp serve``).
- ``primitives.integrations.langgraph``: a LangGraph ``BaseStore`` over ``Memory``
  (``pip install 'memory-primitives[langgraph]'``).
- ``primitives.integrations.langchain``: a LangChain retriever and chat message history
  (``pip install 'memory-primitives[langchain]'``).
"""

__all__: list[str] = []
