"""Local model speed through the app's litellm path against llama-cpp-python called directly.

A (app): ``Completions().stream(default_model, messages, max_tokens=N, temperature=0)`` — litellm,
the custom provider, its worker thread and queue, exactly as the chat pane uses it.
B (direct): ``llama_cpp.Llama`` on the same GGUF with the same ``n_ctx``/``n_threads`` as
``LocalModel``, the same prompt rendered by the model's chat template, the same stop strings and
``max_tokens``, temperature 0 (greedy), streamed.

After a warm-up of each, the runs alternate A B B A A B …; both decode greedily, so both produce the
same text and the same number of tokens, counted with the model's tokenizer.

    python tests/benchmarks/bench_local_model.py           # 3 runs each, 256 tokens
    python tests/benchmarks/bench_local_model.py --quick   # 2 runs each, 64 tokens

Goal: the app path reaches at least 0.9 of the direct tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from benchlib import emit, log

from mangaba_desktop.core.providers.completions import Completions
from mangaba_desktop.core.providers.local_model import LocalModel, embedded_model_path

GOAL_RATIO = 0.9
SEED = 1234

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {
        "role": "user",
        "content": (
            "Write a long, detailed story about a lighthouse keeper who finds a message in a "
            "bottle. Describe the sea, the weather, the keeper's daily routine and what happens "
            "after the message is read."
        ),
    },
]


class Direct:
    """llama-cpp-python on its own, configured as ``LocalModel`` configures it."""

    def __init__(self, reference: LocalModel) -> None:
        from llama_cpp import Llama

        self.llama = Llama(
            model_path=str(reference.path),
            n_ctx=reference.n_ctx,
            n_threads=reference.n_threads,
            seed=SEED,
            verbose=False,
        )

    def run(self, prompt: str, stop: list[str], max_tokens: int) -> dict[str, Any]:
        started = time.perf_counter()
        first = None
        parts = []
        for chunk in self.llama.create_completion(
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=0.0,
            stop=stop,
            stream=True,
            seed=SEED,
        ):
            piece = chunk["choices"][0].get("text") or ""
            if piece:
                if first is None:
                    first = time.perf_counter()
                parts.append(piece)
        return _timing(started, first, time.perf_counter(), "".join(parts))


async def app_run(completions: Completions, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    first = None
    parts = []
    usage: dict[str, int] = {}
    async for piece in completions.stream(
        completions.default_model, MESSAGES, max_tokens=max_tokens, temperature=0.0, seed=SEED
    ):
        if piece.usage:
            usage = piece.usage
        if piece.text:
            if first is None:
                first = time.perf_counter()
            parts.append(piece.text)
    result = _timing(started, first, time.perf_counter(), "".join(parts))
    result["reported_usage"] = usage
    return result


def _timing(started: float, first: float | None, ended: float, text: str) -> dict[str, Any]:
    return {
        "seconds": ended - started,
        "first_token_seconds": (first - started) if first is not None else None,
        "generating_seconds": (ended - first) if first is not None else None,
        "text": text,
    }


def _rates(runs: list[dict[str, Any]], count_tokens: Any) -> dict[str, Any]:
    for run in runs:
        run["tokens"] = count_tokens(run["text"])
        run["tokens_per_second"] = run["tokens"] / run["seconds"]
        generating = run["generating_seconds"] or 0.0
        run["decode_tokens_per_second"] = (run["tokens"] - 1) / generating if generating else None
    decode = [r["decode_tokens_per_second"] for r in runs if r["decode_tokens_per_second"]]
    return {
        "runs": len(runs),
        "tokens": [r["tokens"] for r in runs],
        "tokens_per_second": round(statistics.median(r["tokens_per_second"] for r in runs), 2),
        "tokens_per_second_each": [round(r["tokens_per_second"], 2) for r in runs],
        "decode_tokens_per_second": round(statistics.median(decode), 2) if decode else None,
        "first_token_ms": round(
            statistics.median(r["first_token_seconds"] * 1000 for r in runs), 1
        ),
        "seconds_each": [round(r["seconds"], 3) for r in runs],
    }


async def bench(runs: int, max_tokens: int) -> dict[str, Any]:
    path = embedded_model_path()
    reference = LocalModel(path)  # the app's defaults for n_ctx and n_threads
    log(f"model {path.name}: n_ctx={reference.n_ctx} n_threads={reference.n_threads}")
    prompt, stop = await asyncio.to_thread(reference.render, MESSAGES)

    completions = Completions()
    log("starting the app's completions (litellm import, model load)")
    started = time.perf_counter()
    await completions.start()
    start_seconds = time.perf_counter() - started
    direct = await asyncio.to_thread(Direct, reference)

    def tokens_of(text: str) -> int:
        return len(direct.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    try:
        log("warm-up")
        await app_run(completions, max_tokens)
        await asyncio.to_thread(direct.run, prompt, stop, max_tokens)
        app_runs: list[dict[str, Any]] = []
        direct_runs: list[dict[str, Any]] = []
        for n in range(runs):
            # A B, then B A, …: neither side always runs first after the other.
            if n % 2 == 0:
                app_runs.append(await app_run(completions, max_tokens))
                direct_runs.append(await asyncio.to_thread(direct.run, prompt, stop, max_tokens))
            else:
                direct_runs.append(await asyncio.to_thread(direct.run, prompt, stop, max_tokens))
                app_runs.append(await app_run(completions, max_tokens))
            log(
                f"round {n + 1}/{runs}: app {app_runs[-1]['seconds']:.2f}s, "
                f"direct {direct_runs[-1]['seconds']:.2f}s"
            )
    finally:
        await completions.close()

    app = _rates(app_runs, tokens_of)
    raw = _rates(direct_runs, tokens_of)
    app["reported_usage"] = app_runs[-1]["reported_usage"]
    texts = {r["text"] for r in app_runs + direct_runs}
    prompt_tokens = tokens_of(prompt)
    direct.llama.close()
    reference.close()
    ratio = app["tokens_per_second"] / raw["tokens_per_second"]
    decode_ratio = (
        app["decode_tokens_per_second"] / raw["decode_tokens_per_second"]
        if app["decode_tokens_per_second"] and raw["decode_tokens_per_second"]
        else None
    )
    return {
        "model": path.name,
        "n_ctx": reference.n_ctx,
        "n_threads": reference.n_threads,
        "prompt_tokens": prompt_tokens,
        "app_start_seconds": round(start_seconds, 2),
        "app_litellm": app,
        "direct_llama_cpp": raw,
        "same_text_every_run": len(texts) == 1,
        "sample_text": app_runs[-1]["text"][:300],
        "ratio_app_over_direct": round(ratio, 3),
        "ratio_app_over_direct_decode": round(decode_ratio, 3) if decode_ratio else None,
        "goal": {
            "metric": "app tokens/s ÷ direct tokens/s (end to end, median of runs)",
            "target": f">= {GOAL_RATIO}",
            "value": round(ratio, 3),
            "met": ratio >= GOAL_RATIO,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs each of 64 tokens")
    parser.add_argument("--runs", type=int, help="measured runs of each (3)")
    parser.add_argument("--max-tokens", type=int, help="tokens to generate per run (256)")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 3)
    max_tokens = args.max_tokens or (64 if args.quick else 256)
    result = asyncio.run(bench(runs, max_tokens))
    emit(
        "local_model",
        quick=args.quick,
        parameters={"runs_each": runs, "max_tokens": max_tokens, "temperature": 0.0},
        **result,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
