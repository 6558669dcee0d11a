"""Full-text search over a large history: the app's FTS5 search against a LIKE scan.

Builds (once, then reuses) a real database of ``--messages`` messages through the app's own
schema and migrations, then times ``search_messages`` through ``Database.read_sync`` on a mix of
queries, the kinds a person types (a rare word, a common word, two words, the first letters of
a word), and the same queries as ``LIKE '%word%'`` scans, newest 50 first.

    python tests/benchmarks/bench_search.py            # 1,000,000 messages (build ~ minutes)
    python tests/benchmarks/bench_search.py --quick    # 50,000 messages
    python tests/benchmarks/bench_search.py --db /somewhere/search.sqlite3

Goal: search p95 under 50 ms at 1,000,000 messages.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import cached_meta, emit, log, meta_path, summary_ms, warm_os_cache
from sqlalchemy import text

from mangaba_desktop.core.store.conversations import title_from
from mangaba_desktop.core.store.database import Database
from mangaba_desktop.core.store.search import search_messages

GOAL_P95_MS = 50.0
GENERATOR_VERSION = 1
"""Bump when the generated data changes, so that cached databases are rebuilt."""

LOCAL_MODEL = "mangaba-local/smollm2-135m-instruct"
_WORD = re.compile(r"\w+", re.UNICODE)

# The most frequent ranks are real English words so that common words behave like real ones
# (short, sharing prefixes); the long tail is made-up but pronounceable.
_COMMON_WORDS = """
the to and of a i you it is in that for this be with on not can do have are if what but your
we as or so was at my from just how use will there an me all would by they like get one about
code file data need should more some which here function error when make out then could time
know also new python test see value first way think now work only any want return other run
these set list user model its been line version because try thing into well each change
problem example string question help than using sure good type name call class answer number
case look same class database message server right create check build add memory output config
path update write read start result different point method still page local system after
without both through while process table query key option install first text search window
event thread loop request response stream token reply history chat agent network cost
""".split()  # noqa: SIM905
_ONSETS = "b c d f g h j k l m n p r s t v w z br cl dr fl gr pl pr sh st th tr ch qu sk sp".split()  # noqa: SIM905
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y"]
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "x", "nd", "rt", "st", "ng", "ck"]
_ACCENTED = ["café", "naïve", "résumé", "coração", "façade", "jalapeño", "über", "señor"]


def vocabulary(size: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = list(dict.fromkeys(_COMMON_WORDS))
    seen = set(words)
    while len(words) < size - len(_ACCENTED):
        syllables = rng.choice((1, 2, 2, 2, 3, 3, 4))
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        if len(word) >= 3 and word not in seen:
            seen.add(word)
            words.append(word)
    # A few accented words in the middle ranks exercise remove_diacritics.
    middle = len(words) // 3
    return words[:middle] + _ACCENTED + words[middle:]


def zipf_weights(size: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


# -- building the database ---------------------------------------------------------------------


def build(db_path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Create the database through the app's migrations, then bulk-insert the history."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    meta_path(db_path).unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    Database(db_path).close()  # creates and migrates: tables, indexes, FTS5 table, triggers

    n_messages = spec["messages"]
    n_conversations = spec["conversations"]
    words = vocabulary(spec["vocabulary"], spec["seed"])
    weights = zipf_weights(len(words), spec["zipf_exponent"])
    word_array = np.array(words, dtype=object)
    rng = np.random.default_rng(spec["seed"])
    counts = np.zeros(len(words), dtype=np.int64)  # messages containing each word

    started = time.perf_counter()
    connection = sqlite3.connect(db_path, isolation_level=None)
    connection.execute("PRAGMA synchronous = OFF")
    now = time.time()
    first_time = now - 2 * 365 * 24 * 3600
    step = (now - first_time) / n_messages

    # Messages come in sittings: a few turns in one conversation, then another one.
    conversation_of = np.empty(n_messages, dtype=np.int64)
    position = 0
    while position < n_messages:
        length = int(rng.integers(1, 16)) * 2
        conversation_of[position : position + length] = rng.integers(1, n_conversations + 1)
        position += length

    first_message: dict[int, str] = {}
    last_time: dict[int, float] = {}
    batch = 20_000
    connection.execute("BEGIN")
    for start in range(0, n_messages, batch):
        count = min(batch, n_messages - start)
        ids = np.arange(start + 1, start + count + 1)
        is_user = (ids % 2) == 1
        lengths = np.where(
            is_user,
            rng.integers(3, 40, size=count),
            np.minimum(rng.lognormal(3.8, 0.7, size=count).astype(np.int64) + 5, 400),
        )
        drawn = rng.choice(len(words), size=int(lengths.sum()), p=weights)
        tokens = word_array[drawn]
        # Sentences: about one word in eleven ends one; the next word starts with a capital.
        ends = np.flatnonzero(rng.random(len(tokens)) < 1 / 11)
        tokens[ends] = [w + "." for w in tokens[ends]]
        starts = ends[ends + 1 < len(tokens)] + 1
        tokens[starts] = [w.capitalize() for w in tokens[starts]]
        bounds = np.concatenate(([0], np.cumsum(lengths)))
        rows = []
        for i in range(count):
            a, b = bounds[i], bounds[i + 1]
            message_words = tokens[a:b].tolist()
            message_words[0] = message_words[0].capitalize()
            content = " ".join(message_words)
            if not content.endswith("."):
                content += "?" if is_user[i] else "."
            counts[np.unique(drawn[a:b])] += 1
            message_id = int(ids[i])
            conversation = int(conversation_of[message_id - 1])
            created = first_time + message_id * step
            first_message.setdefault(conversation, content)
            last_time[conversation] = created
            user = bool(is_user[i])
            rows.append(
                (
                    message_id,
                    conversation,
                    "user" if user else "assistant",
                    content,
                    created,
                    None if user else LOCAL_MODEL,
                    None if user else int(b - a) + 30,
                    None if user else 900.0 + 8.0 * int(b - a),
                )
            )
        connection.executemany(
            "INSERT INTO messages (id, conversation_id, role, content, created_at, status, model,"
            " completion_tokens, latency_ms) VALUES (?, ?, ?, ?, ?, 'complete', ?, ?, ?)",
            rows,
        )
        if (start // batch) % 10 == 9 or start + count == n_messages:
            connection.execute("COMMIT")
            connection.execute("BEGIN")
            done = start + count
            rate = done / (time.perf_counter() - started)
            log(f"inserted {done:,}/{n_messages:,} messages ({rate:,.0f}/s)")
    connection.executemany(
        "INSERT INTO conversations (id, title, created_at, updated_at, model) VALUES"
        " (?, ?, ?, ?, ?)",
        [
            (c, title_from(first_message.get(c, "")), first_time, last_time.get(c, now), None)
            for c in range(1, n_conversations + 1)
        ],
    )
    connection.execute("COMMIT")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    build_seconds = time.perf_counter() - started
    meta = {
        "spec": spec,
        "build_seconds": round(build_seconds, 1),
        "vocabulary": words,
        "message_counts": counts.tolist(),
    }
    meta_path(db_path).write_text(json.dumps(meta), encoding="utf-8")
    return meta


# -- queries --------------------------------------------------------------------------------------


def sample_contents(db_path: Path, k: int, seed: int) -> list[str]:
    """The text of ``k`` messages picked at random (repeatably) from the database."""
    connection = sqlite3.connect(db_path)
    try:
        (highest,) = connection.execute("SELECT MAX(id) FROM messages").fetchone()
        rng = random.Random(seed)
        ids = [rng.randint(1, highest) for _ in range(k)]
        return [
            row[0]
            for i in ids
            for row in connection.execute("SELECT content FROM messages WHERE id = ?", (i,))
        ]
    finally:
        connection.close()


def make_queries(
    meta: dict[str, Any], contents: list[str], n_queries: int, seed: int
) -> list[tuple[str, str]]:
    """(kind, query) pairs, a quarter of each kind, in a shuffled but repeatable order.

    rare_word: a word found in a handful of messages; common_word: one of the most frequent
    words; two_words: two less common words that appear together in some message; prefix: the
    first 2-4 letters of a frequent word, as typed while searching as you type.
    """
    rng = random.Random(seed)
    words: list[str] = meta["vocabulary"]
    counts: list[int] = meta["message_counts"]
    n_messages = meta["spec"]["messages"]
    index = {w: i for i, w in enumerate(words)}
    plain = [i for i, w in enumerate(words) if w.isascii()]
    # Rare: in a handful of messages at most (one in ten thousand or fewer), yet present.
    rare_cap = max(3, n_messages // 10_000)
    rare = [i for i in plain if 1 <= counts[i] <= rare_cap]
    if len(rare) < 10:  # small databases: the least frequent words that exist at all
        rare = sorted((i for i in plain if counts[i] > 0), key=lambda i: counts[i])[:200]
    common = plain[:60]
    typed = [i for i in plain[:1500] if len(words[i]) >= 4]
    pairs = []
    for content in contents:
        found = {w.lower() for w in _WORD.findall(content)}
        middle = sorted(w for w in found if w in index and counts[index[w]] <= 0.05 * n_messages)
        if len(middle) >= 2:
            pairs.append(" ".join(rng.sample(middle, 2)))

    queries: list[tuple[str, str]] = []
    per_kind = max(1, n_queries // 4)
    for n in range(per_kind):
        queries.append(("rare_word", words[rng.choice(rare)]))
        queries.append(("common_word", words[rng.choice(common)]))
        queries.append(("two_words", pairs[n % len(pairs)]))
        word = words[rng.choice(typed)]
        queries.append(("prefix", word[: rng.choice((2, 3, 3, 4))]))
    rng.shuffle(queries)
    return queries


def like_scan(connection: Any, query: str, limit: int) -> list[Any]:
    """The same search as a LIKE scan: every word somewhere in the text, newest first."""
    words = _WORD.findall(query) or [query]
    where = " AND ".join(f"m.content LIKE :w{i}" for i in range(len(words)))
    sql = text(
        "SELECT m.id, m.conversation_id, c.title, m.role, m.content, m.created_at"
        " FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id"
        f" WHERE {where} ORDER BY m.id DESC LIMIT :limit"
    )
    params: dict[str, Any] = {f"w{i}": f"%{w}%" for i, w in enumerate(words)}
    params["limit"] = limit
    return list(connection.execute(sql, params).all())


def timed(
    database: Database, queries: list[tuple[str, str]], run: Callable[[Any, str], list[Any]]
) -> dict[str, Any]:
    times: dict[str, list[float]] = {}
    hits: list[int] = []
    for kind, query in queries:
        started = time.perf_counter()
        found = database.read_sync(lambda s, q=query: run(s, q))
        elapsed = time.perf_counter() - started
        times.setdefault(kind, []).append(elapsed)
        hits.append(len(found))
    everything = [t for ts in times.values() for t in ts]
    return {
        "all": summary_ms(everything),
        "by_kind": {kind: summary_ms(ts) for kind, ts in sorted(times.items())},
        "queries_with_no_hit": sum(1 for h in hits if h == 0),
        "queries_with_full_page": sum(1 for h in hits if h >= 50),
        "total_seconds": round(sum(everything), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 messages, 60 queries")
    parser.add_argument("--messages", type=int, help="messages to store (1,000,000)")
    parser.add_argument("--conversations", type=int, help="conversations (1,000)")
    parser.add_argument("--queries", type=int, help="queries to time (200)")
    parser.add_argument("--like-queries", type=int, help="time LIKE on only the first N")
    parser.add_argument("--vocabulary", type=int, default=6000, help="distinct words (6,000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db", type=Path, help="database file to build once and reuse")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)

    messages = args.messages or (50_000 if args.quick else 1_000_000)
    conversations = args.conversations or (100 if args.quick else 1_000)
    n_queries = args.queries or (60 if args.quick else 200)
    spec = {
        "generator": GENERATOR_VERSION,
        "messages": messages,
        "conversations": conversations,
        "vocabulary": args.vocabulary,
        "zipf_exponent": 1.07,
        "seed": args.seed,
    }
    default_db = Path(tempfile.gettempdir()) / "mangaba-bench" / f"search-{messages}.sqlite3"
    db_path = args.db or default_db
    db_path = db_path.expanduser().resolve()

    meta = None if args.rebuild else cached_meta(db_path, spec)
    reused = meta is not None
    if meta is None:
        log(f"building {db_path} with {messages:,} messages")
        meta = build(db_path, spec)
    else:
        log(f"reusing {db_path}")

    contents = sample_contents(db_path, n_queries, args.seed + 2)
    queries = make_queries(meta, contents, n_queries, args.seed + 1)
    like_queries = queries[: args.like_queries] if args.like_queries else queries
    warm_os_cache(db_path)
    database = Database(db_path)
    try:
        for _, query in queries[:10]:  # warm-up: connections, statement cache, hot pages
            database.read_sync(lambda s, q=query: search_messages(s, q))
        log(f"timing search_messages on {len(queries)} queries")
        fts = timed(database, queries, lambda s, q: search_messages(s, q, 50))
        log(f"timing LIKE scans on {len(like_queries)} queries")
        like = timed(database, like_queries, lambda s, q: like_scan(s.connection(), q, 50))
    finally:
        database.close()

    fts_p95 = fts["all"]["p95_ms"]
    like_p95 = like["all"]["p95_ms"]
    files = [Path(f"{db_path}{suffix}") for suffix in ("", "-wal")]
    size = sum(f.stat().st_size for f in files if f.exists())
    emit(
        "search",
        quick=args.quick,
        parameters={
            **spec,
            "queries": len(queries),
            "like_queries": len(like_queries),
            "limit": 50,
            "db": str(db_path),
            "db_bytes": size,
            "db_reused": reused,
            "build_seconds": meta["build_seconds"],
            "sqlite": sqlite3.sqlite_version,
            "os_page_cache": "warm (file read once before timing)",
            "note": (
                "search_messages treats the last word as a prefix (search as you type); LIKE "
                "matches inside words too, so their hit lists differ a little"
            ),
            "example_queries": {
                kind: [q for k, q in queries if k == kind][:5]
                for kind in ("rare_word", "common_word", "two_words", "prefix")
            },
        },
        search_messages=fts,
        like_scan=like,
        ratio_like_over_search_p50=round(like["all"]["p50_ms"] / fts["all"]["p50_ms"], 2),
        ratio_like_over_search_p95=round(like_p95 / fts_p95, 2),
        goal={
            "metric": "search_messages p95 (ms)",
            "target": f"< {GOAL_P95_MS:g}",
            "value": fts_p95,
            "met": fts_p95 < GOAL_P95_MS,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
