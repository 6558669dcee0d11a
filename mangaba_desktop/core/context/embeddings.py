"""Optional vector similarity for retrieval: embeddings of contexts, fused with the word-based
ranking by reciprocal rank fusion.

Retrieval works without them. When an embedder is configured, contexts get an embedding in the
background (the ``embeddings`` column holds the model's name and the vector, so a change of
model re-indexes instead of comparing vectors from two models), and each retrieval also ranks
the recent contexts of the session and the word-matched candidates by cosine similarity.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

MAGIC = b"MGE1"
RRF_K = 60
"""Reciprocal rank fusion's constant: a context's fused score is the sum of 1/(K + rank)."""
VECTOR_POOL = 200
"""Newest live contexts of the scope compared by similarity, beside the word matches."""
VECTOR_HITS = 5
"""Most similar contexts that enter the fusion."""
MIN_SIMILARITY = 0.3
SIMILARITY_MARGIN = 0.05
"""Only contexts this close to the best similarity count: a similarity list has no "no match",
and small models rate everything alike, so the near-best stand in for a match."""
MAX_EMBED_CHARS = 2000


class Embedder(Protocol):
    name: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text."""
        ...


def pack(model: str, vector: np.ndarray) -> bytes:
    name = model.encode("utf-8")
    data = np.asarray(vector, dtype="<f4")
    return MAGIC + struct.pack("<H", len(name)) + name + data.tobytes()


def unpack(blob: bytes | None, model: str) -> np.ndarray | None:
    """The vector in ``blob`` if ``model`` made it, else ``None``."""
    if not blob or not blob.startswith(MAGIC) or len(blob) < 6:
        return None
    (size,) = struct.unpack("<H", blob[4:6])
    if blob[6 : 6 + size].decode("utf-8", "replace") != model:
        return None
    return np.frombuffer(blob[6 + size :], dtype="<f4")


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class LocalEmbedder:
    """Embeddings from a GGUF model run by llama.cpp (the embedded chat model by default),
    mean-pooled, on one worker thread of its own."""

    def __init__(self, path: Path | None = None, *, n_threads: int = 1) -> None:
        self.path = path
        self.n_threads = n_threads
        self._llama: Any = None
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="embedder")

    @property
    def name(self) -> str:
        from ..providers.completions import LOCAL_PROVIDER

        file = self.path.stem if self.path else "smollm2-135m-instruct"
        return f"{LOCAL_PROVIDER}/{file}"

    def _load(self) -> Any:
        if self._llama is None:
            from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

            from ..providers.local_model import embedded_model_path

            self._llama = Llama(
                model_path=str(self.path or embedded_model_path()),
                embedding=True,
                n_ctx=512,
                n_batch=512,
                n_ubatch=512,
                pooling_type=LLAMA_POOLING_TYPE_MEAN,
                n_threads=self.n_threads,
                verbose=False,
            )
        return self._llama

    def _embed(self, texts: list[str]) -> np.ndarray:
        llama = self._load()
        return normalise(np.array([llama.embed(t[:MAX_EMBED_CHARS]) for t in texts]))

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._embed, list(texts))

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        if self._llama is not None:
            self._llama.close()
            self._llama = None


class LiteLLMEmbedder:
    """Embeddings from any embedding model litellm reaches (``openai/text-embedding-3-small``,
    an Ollama model, a litellm proxy...)."""

    def __init__(self, model: str, **params: Any) -> None:
        self.name = model
        self.params = params

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        from ..providers.completions import import_litellm

        litellm = await asyncio.to_thread(import_litellm)
        response = await litellm.aembedding(
            model=self.name, input=[t[:MAX_EMBED_CHARS] for t in texts], **self.params
        )
        rows = sorted(response.data, key=lambda item: item["index"])
        return normalise(np.array([row["embedding"] for row in rows]))


def fuse(*rankings: Sequence[int]) -> dict[int, float]:
    """Reciprocal rank fusion of ranked id lists (best first)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, context_id in enumerate(ranking, 1):
            fused[context_id] = fused.get(context_id, 0.0) + 1.0 / (RRF_K + rank)
    return fused
