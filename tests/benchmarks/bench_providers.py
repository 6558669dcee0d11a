"""The app's provider path against bare litellm, and the pacer's schedule under a burst.

(a) Overhead. Both stream the same ~50-word reply from the OpenAI-compatible test server on
127.0.0.1, which waits ``delay_s`` before each piece:

- app: ``Completions(settings=...).stream("bench/echo", ...)`` — the settings' Router, the
  pacer, the fallback chain, the finish check and the cost, as the chat uses it (the provider's
  rate is set high so that the pacer never holds a request back);
- bare: ``litellm.acompletion(model="openai/echo", api_base=..., api_key=..., stream=True)``
  with the same ``stream_options`` (so the server sends the same bytes).

After a warm-up of each, the runs alternate A B B A A B …; time to the first text and to the
end of the stream are reported as p50/p95 and as ratios app ÷ bare.

(b) Pacing. ``--burst`` requests at once through the app's path to one provider at ``--rate``
a minute (bursts of a tenth of that). The ideal start of the k-th (from 0) is
``max(0, k - burst + 1) / rate`` after the first; each request's start (when the pacer lets it
go) and its arrival at the server are compared with it. The same burst of bare ``Pacer.wait``
calls, with no HTTP behind them, is the baseline of the pacer alone.

    python tests/benchmarks/bench_providers.py           # 200 runs each, 500 paced requests
    python tests/benchmarks/bench_providers.py --quick   # 40 runs each, 200 paced requests

Goal: app ÷ bare <= 1.1 for the median time to the end of a reply.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import emit, log, summary_ms

GOAL_RATIO = 1.1
PROMPT = [{"role": "user", "content": "Tell me about the sea."}]
REPLY = (
    "The sea was calm that morning and the keeper walked down to the rocks to look for the "
    "bottle he had seen from the lamp room, green glass catching the light between the weed "
    "and the foam, while gulls argued over the harbour and the tide turned slowly back."
)


def _paths() -> None:
    """Make ``tests.helpers`` importable when run as a script from anywhere."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def bench_provider(server: Any, **fields: Any) -> Any:
    """The provider "bench" of the test server ``server``, offering "echo"."""
    from tests.helpers.providers import local_provider

    return local_provider(server.base_url, "echo", id="bench", name="Bench server", **fields)


# -- (a) overhead ------------------------------------------------------------------------------


async def app_run(completions: Any) -> tuple[float, float, str]:
    started = time.perf_counter()
    first = None
    parts = []
    async for piece in completions.stream("bench/echo", PROMPT):
        if piece.text:
            if first is None:
                first = time.perf_counter()
            parts.append(piece.text)
    ended = time.perf_counter()
    assert first is not None
    return first - started, ended - started, "".join(parts)


async def bare_run(litellm: Any, base_url: str) -> tuple[float, float, str]:
    started = time.perf_counter()
    first = None
    parts = []
    response = await litellm.acompletion(
        model="openai/echo",
        messages=PROMPT,
        api_base=base_url,
        api_key="none",
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in response:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            if first is None:
                first = time.perf_counter()
            parts.append(text)
    ended = time.perf_counter()
    assert first is not None
    return first - started, ended - started, "".join(parts)


def _ratio(app: dict[str, Any], bare: dict[str, Any], key: str) -> float:
    return round(app[key] / bare[key], 3)


async def overhead(runs: int, warmup: int, delay_s: float) -> dict[str, Any]:
    from mangaba_desktop.core.providers.completions import Completions
    from mangaba_desktop.core.settings import Settings
    from tests.helpers.openai_server import OpenAIServer

    server = OpenAIServer(reply=REPLY, delay_s=delay_s).start()
    provider = bench_provider(server, requests_per_minute=100_000.0)
    completions = Completions(settings=Settings(providers=[provider]))
    try:
        log("importing litellm through the app")
        await completions.router()
        litellm = completions._litellm
        log(f"warm-up: {warmup} of each")
        for _ in range(warmup):
            await app_run(completions)
            await bare_run(litellm, server.base_url)
        app: list[tuple[float, float, str]] = []
        bare: list[tuple[float, float, str]] = []
        for n in range(runs):
            # A B, then B A, …: neither side always runs first after the other.
            if n % 2 == 0:
                app.append(await app_run(completions))
                bare.append(await bare_run(litellm, server.base_url))
            else:
                bare.append(await bare_run(litellm, server.base_url))
                app.append(await app_run(completions))
            if (n + 1) % 50 == 0:
                log(f"round {n + 1}/{runs}")
    finally:
        await completions.close()
        server.stop()
    texts = {text for _, _, text in app + bare}
    result: dict[str, Any] = {
        "app": {
            "first_token": summary_ms([r[0] for r in app]),
            "total": summary_ms([r[1] for r in app]),
        },
        "bare_litellm": {
            "first_token": summary_ms([r[0] for r in bare]),
            "total": summary_ms([r[1] for r in bare]),
        },
        "same_text_every_run": texts == {REPLY},
        "reply_words": len(REPLY.split()),
    }
    a, b = result["app"], result["bare_litellm"]
    result["ratio_app_over_bare"] = {
        "first_token_p50": _ratio(a["first_token"], b["first_token"], "p50_ms"),
        "first_token_p95": _ratio(a["first_token"], b["first_token"], "p95_ms"),
        "total_p50": _ratio(a["total"], b["total"], "p50_ms"),
        "total_p95": _ratio(a["total"], b["total"], "p95_ms"),
    }
    result["added_ms_p50"] = {
        "first_token": round(a["first_token"]["p50_ms"] - b["first_token"]["p50_ms"], 3),
        "total": round(a["total"]["p50_ms"] - b["total"]["p50_ms"], 3),
    }
    return result


# -- (b) pacing --------------------------------------------------------------------------------


def _schedule_errors(starts: list[float], origin: float, burst: int, rate: float) -> dict[str, Any]:
    """How far each start is from the ideal one: the k-th earliest against the k-th slot.
    Positive errors are late starts; those of the paced requests (after the burst) are also
    given on their own."""
    ordered = sorted(starts)
    errors = [(at - origin) - max(0, k - burst + 1) / rate for k, at in enumerate(ordered)]
    paced = ordered[burst:]
    achieved = None
    if len(paced) > 1:
        achieved = (len(paced) - 1) / (paced[-1] - paced[0]) * 60.0

    def ms(values: list[float], how: Any) -> float | None:
        return round(how(values) * 1000, 3) if values else None

    return {
        "error_mean_ms": ms(errors, statistics.fmean),
        "error_max_ms": ms(errors, max),
        "error_min_ms": ms(errors, min),
        "error_p95_ms": ms(errors, lambda e: sorted(e)[int(0.95 * (len(e) - 1))]),
        "paced_error_mean_ms": ms(errors[burst:], statistics.fmean),
        "paced_error_max_ms": ms(errors[burst:], max),
        "last_start_s": round(ordered[-1] - origin, 3),
        "ideal_last_start_s": round(max(0, len(ordered) - burst) / rate, 3),
        "achieved_per_minute_after_the_burst": round(achieved, 1) if achieved else None,
    }


async def pacing_alone(count: int, per_minute: float) -> dict[str, Any]:
    from mangaba_desktop.core.ratelimit import Pacer

    pacer = Pacer()
    released: list[float] = []

    async def one() -> None:
        await pacer.wait("bench", per_minute)
        released.append(time.monotonic())

    origin = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    burst = int(Pacer.burst_for(per_minute))
    return {"burst": burst, **_schedule_errors(released, origin, burst, per_minute / 60.0)}


async def pacing_through_the_app(count: int, per_minute: float) -> dict[str, Any]:
    from mangaba_desktop.core.providers.completions import Completions
    from mangaba_desktop.core.ratelimit import Pacer
    from tests.helpers.openai_server import OpenAIServer
    from tests.helpers.providers import settings_with

    class Recording(Pacer):
        def __init__(self) -> None:
            super().__init__()
            self.first: float | None = None
            self.released: list[float] = []

        async def wait(self, key: str, per_minute: float) -> float:
            if self.first is None:
                self.first = self.clock()
            waited = await super().wait(key, per_minute)
            self.released.append(self.clock())
            return waited

    server = OpenAIServer(reply="ok").start()
    provider = bench_provider(server, requests_per_minute=per_minute, timeout_s=120.0)
    completions = Completions(settings=settings_with(provider))
    pacer = Recording()
    completions.pacer = pacer
    failures = 0
    try:
        await completions.router()

        async def one() -> None:
            nonlocal failures
            try:
                async for _ in completions.stream("bench/echo", PROMPT):
                    pass
            except Exception as exc:
                failures += 1
                log(f"a paced request failed: {exc}")

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        seconds = time.monotonic() - started
    finally:
        await completions.close()
        server.stop()
    burst = int(Pacer.burst_for(per_minute))
    rate = per_minute / 60.0
    assert pacer.first is not None
    return {
        "released_by_the_pacer": _schedule_errors(pacer.released, pacer.first, burst, rate),
        "arrived_at_the_server": _schedule_errors(
            [r.at for r in server.requests], pacer.first, burst, rate
        ),
        "failed": failures,
        "seconds": round(seconds, 3),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    log(f"(a) overhead: {args.runs} runs each, {args.delay_ms} ms a piece")
    measured = await overhead(args.runs, args.warmup, args.delay_ms / 1000.0)
    log(f"(b) pacing: {args.burst} requests at {args.rate:g}/min, the pacer alone")
    alone = await pacing_alone(args.burst, args.rate)
    log("(b) pacing: through the app's path to the server")
    through = await pacing_through_the_app(args.burst, args.rate)
    ratio = measured["ratio_app_over_bare"]["total_p50"]
    return {
        "overhead": measured,
        "pacing": {
            "requests": args.burst,
            "per_minute": args.rate,
            "pacer_alone": alone,
            "through_the_app": through,
        },
        "goal": {
            "metric": "app ÷ bare litellm, median time to the end of a streamed reply",
            "target": f"<= {GOAL_RATIO}",
            "value": ratio,
            "met": ratio <= GOAL_RATIO,
            "first_token_p50_ratio": measured["ratio_app_over_bare"]["first_token_p50"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 runs each, 200 paced requests")
    parser.add_argument("--runs", type=int, help="measured runs of each path (200)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured runs of each (20)")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="server pause a piece (2)")
    parser.add_argument("--burst", type=int, help="requests fired at once for the pacer (500)")
    parser.add_argument(
        "--rate",
        type=float,
        default=3000.0,
        help="the provider's requests a minute (3000: bursts of 300, then 50 a second)",
    )
    args = parser.parse_args(argv)
    args.runs = args.runs or (40 if args.quick else 200)
    args.burst = args.burst or (200 if args.quick else 500)
    if args.quick:
        args.rate = min(args.rate, 1200.0)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    _paths()
    result = asyncio.run(bench(args))
    emit(
        "providers",
        quick=args.quick,
        parameters={
            "runs_each": args.runs,
            "warmup_each": args.warmup,
            "server_delay_ms_per_piece": args.delay_ms,
            "paced_requests": args.burst,
            "per_minute": args.rate,
        },
        **result,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
