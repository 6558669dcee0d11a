"""The context store (the seed's "MCP"): what agents remember, and how it reaches a prompt."""

from .passages import InvalidContext, parse_tags, split_passages
from .retrieval import RetrievedContext
from .store import AGENT_WIDE, ContextFilter, ContextStore, ImportResult, SessionInfo

__all__ = [
    "AGENT_WIDE",
    "ContextFilter",
    "ContextStore",
    "ImportResult",
    "InvalidContext",
    "RetrievedContext",
    "SessionInfo",
    "parse_tags",
    "split_passages",
]
