"""The spec's configuration and provider examples, run as written against the scripted server."""

import anthropic  # noqa: F401 - the Providers example imports it
import pytest

from headroom.memory import AsyncMemoryClient, MemoryClient

from .conftest import default_model
from .spec_examples import examples
from .test_fast_memory import PREAMBLE


@pytest.fixture
def env(monkeypatch, tmp_path, local_embedder):
    from headroom._scripted_server import ScriptedServer

    with ScriptedServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("GROQ_BASE_URL", srv.base_url.removesuffix("/v1"))
        monkeypatch.setenv("HEADROOM_MEMORY_DB", str(tmp_path / "default.db"))
        monkeypatch.chdir(tmp_path)
        yield srv, tmp_path


def run(code: str) -> dict:
    namespace: dict = {}
    exec(compile(PREAMBLE + code, "<spec>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("heading", [
    "### 1. Fast Memory (Inline Extraction)", "### Retrieval"])
def test_fast_memory_options(doc, env, heading):
    (code,) = examples(heading)
    client = run(code)["client"]
    assert isinstance(client, MemoryClient)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "I prefer vim."}])
    assert [m.text for m in client.memory.get_all()] == ["Prefers vim"]


def test_storage_examples(doc, env):
    server, tmp_path = env
    (code,) = examples("### Storage", doc)
    # The second example writes to /data/memories.db; here /data is the test's own directory.
    ns = run(code.replace("/data/", f"{tmp_path}/data/"))
    assert ns["client"].memory.stats()["db_path"] == f"{tmp_path}/data/memories.db"
    assert (tmp_path / "memory.db").is_file() and (tmp_path / "data" / "memories.db").is_file()


def test_embedding_examples(doc, env):
    server, tmp_path = env
    (code,) = examples("### Embeddings", doc)
    # The two examples share the default file, and one file keeps one embedding model: give the
    # second its own file, as a user switching models must.
    cut = code.index("# OpenAI embeddings")
    first, second = code[:cut], code[cut:]
    local = run(first)["client"]
    assert local.memory.stats()["embedding_model"] == default_model()
    remote = run(second.replace('user_id="alice",', f'user_id="alice", db_path="{tmp_path}/openai.db",'))["client"]
    remote.memory.add("Prefers dark mode")
    assert remote.memory.stats()["embedding_model"] == "text-embedding-3-small"
    assert any(r.path == "/v1/embeddings" for r in server.requests)


def test_providers_example(doc, env):
    (code,) = examples("## Providers", doc)
    runnable = "\n".join(line for line in code.splitlines() if "YourClient" not in line)
    ns = run(runnable.replace('base_url="..."', "base_url=None"))
    assert type(ns["client"]) in (MemoryClient, AsyncMemoryClient)
    ns["client"].chat.completions.create(model="llama", messages=[{"role": "user", "content": "We use Go."}])
    assert [m.text for m in ns["client"].memory.get_all()] == ["Uses Go"]
