"""Which contexts a reply should see: BM25-style relevance within the agent's scope, weighted
by priority and recency.

Only a context that shares words with the query is a candidate, so priority alone never makes
anything relevant (the upstream defect this replaces ranked every context by priority). Each
word is looked up in the FTS5 index together with the tokens of the ``scope`` column (see the
migration), and weighed by how many contexts in scope hold it, so the cost follows the size of
the session, not of the store.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from ..store.models import Context, Priority

_WORD = re.compile(r"\w+", re.UNICODE)

MAX_QUERY_TERMS = 16
CANDIDATES = 100
"""Most relevant matches re-ranked by priority and recency."""
HITS_PER_TERM = 20_000
"""Most recent contexts in scope counted for one word (a word in more says little anyway)."""

PRIORITY_WEIGHT = {
    Priority.LOW: 1.0,
    Priority.MEDIUM: 1.15,
    Priority.HIGH: 1.35,
    Priority.CRITICAL: 1.6,
}
RECENCY_HALF_LIFE_S = 14 * 24 * 3600.0
"""A context untouched for two weeks weighs three quarters of a fresh one; never less than half."""

# Words too common to say anything about relevance, in the languages the personas speak.
_STOPWORD_TEXT = """
    a o as os e é de do da dos das um uma uns umas em no na nos nas por para pra com que qual
    quais meu minha meus minhas seu sua teu tua se ao aos à às eu tu ele ela nós vós eles elas
    me te lhe mas ou como mais muito já foi ser são está estou isso isto esse essa este esta
    the an and or of to in on at for with is are was were be been am i you he she it we they my
    your his her its our their me him us them this that these those what which who whom do does
    did have has had not no yes so as by from if then than but can could would should will
    el la los las un una y o de del en por para con que cual mi tu su es son
    """
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def scope_tokens(agent_id: str, session_id: str | None) -> tuple[str, str]:
    """The index tokens of this agent in this session, and of this agent everywhere."""
    agent_wide = "g" + agent_id.encode("utf-8").hex()
    if session_id is None:
        return agent_wide, agent_wide
    return "s" + f"{agent_id}/{session_id}".encode().hex(), agent_wide


def query_terms(text: str) -> list[str]:
    """Distinct words of ``text`` worth searching for, in order, stopwords left out (unless
    nothing else is left)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        seen.setdefault(word, None)
    words = list(seen)
    useful = [w for w in words if w not in STOPWORDS and len(w) > 1]
    return (useful or words)[:MAX_QUERY_TERMS]


def terms_expression(terms: list[str]) -> str | None:
    """Any of ``terms`` in the content or the tags; each term quoted, so no FTS5 syntax typed
    by a user (quotes, ``*``, ``OR``, parentheses) ever reaches the parser."""
    if not terms:
        return None
    quoted = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
    return "{content tags} : (" + quoted + ")"


@dataclass
class RetrievedContext:
    """A context chosen for a prompt, with why."""

    context: Context
    score: float
    relevance: float
    """BM25 relevance (higher is better); 0 for pinned contexts, which are always given."""
    pinned: bool = False


def term_weight(matches: int, scope_size: int) -> float:
    """How much holding a word says about a context: BM25's inverse document frequency,
    among the ``scope_size`` contexts in scope of which ``matches`` hold it. Always above zero,
    and small for a word most contexts hold."""
    return math.log(1.0 + (scope_size - matches + 0.5) / (matches + 0.5))


BM25_K1 = 1.2
BM25_B = 0.75


def normalise_length(relevance: dict[int, float], lengths: dict[int, int]) -> dict[int, float]:
    """BM25's length normalisation: a word in a short note says more than the same word once
    in a long passage. Applied to the contexts in ``lengths`` (the candidates)."""
    if not lengths:
        return relevance
    average = sum(lengths.values()) / len(lengths) or 1.0
    factor = {
        i: (BM25_K1 + 1) / (1 + BM25_K1 * (1 - BM25_B + BM25_B * size / average))
        for i, size in lengths.items()
    }
    return {i: weight * factor.get(i, 1.0) for i, weight in relevance.items()}


def score(relevance: float, context: Context, now: float | None = None) -> float:
    now = time.time() if now is None else now
    touched = context.last_accessed or context.created_at
    age = max(0.0, now - touched)
    recency = 0.5 + 0.5 * math.exp(-math.log(2) * age / RECENCY_HALF_LIFE_S)
    weight = PRIORITY_WEIGHT.get(Priority(context.priority), 1.0)
    return relevance * weight * recency


def format_for_prompt(
    contexts: list[RetrievedContext], budget_chars: int
) -> tuple[str, list[RetrievedContext]]:
    """The contexts as a numbered list for the system prompt, within ``budget_chars``, and the
    contexts that fitted."""
    lines: list[str] = []
    fitted: list[RetrievedContext] = []
    used = 0
    for number, item in enumerate(contexts, 1):
        text = item.context.content
        room = budget_chars - used
        if room < 80:
            break
        if len(text) > room:
            text = text[: room - 1].rstrip() + "…"
        label = item.context.context_type.replace("_", " ")
        lines.append(f"[{number}] ({label}) {text}")
        fitted.append(item)
        used += len(text)
    return "\n".join(lines), fitted
