"""Embedders: the real local model (ONNX fast path against torch), OpenAI over real HTTP, hashing."""

import numpy as np
import openai
import pytest

from headroom._scripted_server import ScriptedServer, hash_vector
from headroom.memory import (
    EmbeddingError,
    HashEmbedder,
    InvalidInputError,
    LocalEmbedder,
    OpenAIEmbedder,
    open_memory,
)
from headroom.memory._embedders import make_embedder
from headroom.memory._local_model import onnx_cache_path

SENTENCES = [
    "I prefer Python for backend work",
    "We use PostgreSQL",
    "What database should I use for my new project? " * 40,  # longer than the 256-token window
    "ok",
]


def test_local_embedder_uses_onnx_and_returns_unit_rows(local_embedder):
    fp32 = LocalEmbedder(int8=False)
    for embedder in (local_embedder, fp32):
        assert embedder.backend == "onnx"
        vectors = embedder.embed(SENTENCES)
        assert vectors.shape == (4, 384) and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert embedder.embed([]).shape == (0, 384)
    # Batching and padding do not change a sentence's vector in fp32, and hardly in int8 (which
    # scales each product's input per call, so a batch's other texts count a little).
    texts = SENTENCES + ["Thanks!", "lol ok", "Which programming language should I pick for the new API server?"]
    alone = np.vstack([fp32.embed([s]) for s in texts])
    assert np.allclose(fp32.embed(texts), alone, atol=1e-5)
    assert np.min(np.sum(LocalEmbedder(int8=True).embed(texts) * alone, axis=1)) >= 0.99


def test_onnx_export_from_scratch_matches_sentence_transformers(tmp_path):
    onnx = LocalEmbedder(backend="onnx", cache_dir=str(tmp_path), int8=False)
    torch_model = LocalEmbedder(backend="torch")
    got, want = onnx.embed(SENTENCES), torch_model.embed(SENTENCES)
    assert onnx_cache_path(str(tmp_path)).is_file()
    assert torch_model.backend == "torch"
    assert np.min(np.sum(got * want, axis=1)) > 0.9999


def test_local_embedder_knows_meaning(local_embedder):
    a, b, c = local_embedder.embed(["I love programming in Python", "Python is my favourite language",
                                    "The weather in Lisbon is sunny"])
    assert a @ b > 0.6 > a @ c


def test_openai_embedder_over_http():
    with ScriptedServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        embedder = OpenAIEmbedder(client)
        embedder.batch_size = 3  # force several requests
        vectors = embedder.embed([f"text {i}" for i in range(7)])
    assert embedder.name == "text-embedding-3-small" and embedder.dim == 1536
    assert vectors.shape == (7, 1536)
    assert np.allclose(vectors[5], hash_vector("text 5", 1536), atol=1e-6)
    sent = [r.body for r in server.requests]
    assert [len(b["input"]) for b in sent] == [3, 3, 1]
    assert {b["model"] for b in sent} == {"text-embedding-3-small"}


def test_openai_embedder_end_to_end_memory(db_path):
    with ScriptedServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        memory = open_memory("alice", db_path, embedder=OpenAIEmbedder(client))
        m = memory.add("Prefers Go for CLIs")
        assert memory.search("Prefers Go for CLIs")[0] == (m, pytest.approx(1.0, abs=1e-5))
        assert memory.stats()["embedding_dim"] == 1536


def test_dead_embedding_service_is_an_embedding_error_and_loses_nothing(db_path):
    with ScriptedServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        memory = open_memory("alice", db_path, embedder=OpenAIEmbedder(client))
        kept = memory.add("Has a dog")
        server.handlers["/v1/embeddings"] = lambda body: (503, {"error": {"message": "down", "type": "server"}})
        with pytest.raises(EmbeddingError, match="text-embedding-3-small"):
            memory.add("Has a cat")
        with pytest.raises(EmbeddingError):
            memory.search("pets")
        server.handlers["/v1/embeddings"] = lambda body: (200, {"object": "list", "data": [
            {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}], "model": "x", "usage": {}})
        with pytest.raises(EmbeddingError, match="shape"):
            memory.add("Has a hamster")
    assert memory.get_all() == [kept]


def test_make_embedder_follows_the_spec_switches():
    assert isinstance(make_embedder(True, "all-MiniLM-L6-v2"), LocalEmbedder)
    assert isinstance(make_embedder(True, "sentence-transformers/all-MiniLM-L6-v2"), LocalEmbedder)
    remote = make_embedder(False, "all-MiniLM-L6-v2")  # the spec's default model name with local off
    assert isinstance(remote, OpenAIEmbedder) and remote.name == "text-embedding-3-small"
    assert make_embedder(False, "text-embedding-3-large").dim == 3072
    with pytest.raises(InvalidInputError):
        make_embedder(True, "bge-large")
    with pytest.raises(InvalidInputError):
        OpenAIEmbedder(model="mystery-model")


def test_hash_embedder_is_deterministic():
    a = HashEmbedder().embed(["same words", "other"])
    b = HashEmbedder().embed(["same words", "other"])
    assert np.array_equal(a, b) and not np.allclose(a[0], a[1])


def test_a_model_directory_by_path_embeds_as_sentence_transformers_does(tmp_path, local_embedder, monkeypatch):
    """Any mean-pooled sentence-transformers directory can be the local model (the installed
    MiniLM stands in here for e.g. all-mpnet-base-v2: its name, size and window come from its files)."""
    from headroom.memory._local_model import model_dir

    by_path = LocalEmbedder(path=str(model_dir()))
    assert (by_path.name, by_path.dim) == (local_embedder.name, 384)  # the installed model keeps its name
    assert np.allclose(by_path.embed(SENTENCES), local_embedder.embed(SENTENCES), atol=1e-5)
    # By its path, the installed model is the default one: one runtime in the process, not two.
    assert LocalEmbedder(path=str(model_dir()))._runtime() is local_embedder._runtime()
    assert isinstance(make_embedder(True, str(model_dir())), LocalEmbedder)

    monkeypatch.setenv("HEADROOM_CACHE_DIR", str(tmp_path))  # exports land here, not in the user's cache
    copy = tmp_path / "my-minilm"  # a copy elsewhere is a model of its own name, recorded in files
    copy.mkdir()
    for item in model_dir().iterdir():
        (copy / item.name).symlink_to(item)
    other = LocalEmbedder(path=str(copy), backend="onnx", cache_dir=str(tmp_path))
    assert other.name == "my-minilm" and other.backend == "onnx"
    memory = open_memory("u", str(tmp_path / "m.db"), embedding_model=str(copy))
    memory.add("Prefers Python for backend work", "preference")
    memory.flush()
    assert memory.search("which language for servers?")[0][0].text == "Prefers Python for backend work"
    memory.close()
    from headroom.memory import EmbeddingModelMismatchError

    with pytest.raises(EmbeddingModelMismatchError, match="holds vectors of my-minilm"):  # the file keeps to it
        open_memory("u", str(tmp_path / "m.db"))


def test_a_directory_that_is_not_a_model_is_refused(tmp_path):
    from headroom.memory import EmbedderUnavailableError

    with pytest.raises(EmbedderUnavailableError, match="not a sentence-transformers model directory"):
        LocalEmbedder(path=str(tmp_path))


def test_the_int8_variant_is_built_once_checked_and_named_apart(tmp_path, local_embedder):
    """int8 is built from the fp32 export into the cache dir, agrees with fp32 (cosine >= 0.99 on
    the check set), and a memory file records it under its own name."""
    import shutil

    from headroom.memory import EmbeddingModelMismatchError
    from headroom.memory._quantize import CHECK

    shutil.copy(onnx_cache_path(), onnx_cache_path(str(tmp_path)))  # the fp32 export the fixture made
    int8 = LocalEmbedder(int8=True, cache_dir=str(tmp_path))
    assert int8.name == "all-MiniLM-L6-v2-int8" and int8.dim == 384
    fp32 = LocalEmbedder(int8=False)
    got, want = int8.embed(CHECK + SENTENCES), fp32.embed(CHECK + SENTENCES)
    assert onnx_cache_path(str(tmp_path), int8=True).is_file()
    assert np.min(np.sum(got * want, axis=1)) >= 0.99
    assert not np.allclose(got, want, atol=1e-4)  # it is a different model, not fp32 under a new name
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    by_name = make_embedder(True, "all-MiniLM-L6-v2-int8")
    assert isinstance(by_name, LocalEmbedder) and by_name.name == "all-MiniLM-L6-v2-int8"

    db = str(tmp_path / "m.db")
    memory = open_memory("u", db, embedder=int8)
    memory.add("Is allergic to peanuts", "fact")
    assert memory.search("any food to avoid at dinner?")[0][0].text == "Is allergic to peanuts"
    memory.close()
    for insisting in ({"embedder": fp32}, {"embedding_model": "all-MiniLM-L6-v2-fp32"}):
        with pytest.raises(EmbeddingModelMismatchError, match="holds vectors of all-MiniLM-L6-v2-int8"):
            open_memory("u", db, **insisting)  # fp32 vectors are not mixed into an int8 file
    with pytest.raises(InvalidInputError):
        LocalEmbedder(int8=True, backend="torch")


def test_new_stores_get_int8_and_a_store_keeps_the_variant_it_recorded(db_path, tmp_path):
    """Left to choose (the default settings, or a ``LocalEmbedder()`` of one's own), the local model
    is int8 where int8 passes its check, as it does here; a store made in fp32 (before int8 was
    the default) is opened in fp32, on either backend; insisting on the other variant is refused."""
    from headroom.memory import EmbeddingModelMismatchError
    from headroom.memory._backends import embedder_for, recorded_model
    from headroom.memory._local_model import int8_usable

    if not int8_usable():
        pytest.skip("the int8 variant fails its check on this CPU: new files are fp32 here")
    assert LocalEmbedder().name == "all-MiniLM-L6-v2-int8"
    assert recorded_model(db_path) is None and embedder_for(db_path).name == "all-MiniLM-L6-v2-int8"
    with open_memory("u", db_path, embedding_model="all-MiniLM-L6-v2-fp32") as made:
        made.add("Is allergic to peanuts", "fact")
    assert recorded_model(db_path) == "all-MiniLM-L6-v2"
    for opened in (lambda: open_memory("u", db_path), lambda: open_memory("u", db_path, embedder=LocalEmbedder())):
        with opened() as memory:  # no mismatch: it follows the store
            assert memory.embedder.name == memory.stats()["embedding_model"] == "all-MiniLM-L6-v2"
            assert memory.search("any food to avoid at dinner?")[0][0].text == "Is allergic to peanuts"
    with pytest.raises(EmbeddingModelMismatchError, match="holds vectors of all-MiniLM-L6-v2 "):
        open_memory("u", db_path, embedder=LocalEmbedder(int8=True))
    new = str(tmp_path / "new.db")
    with open_memory("u", new) as memory:
        memory.add("Speaks Finnish", "fact")
    assert recorded_model(new) == "all-MiniLM-L6-v2-int8" and embedder_for(new).name == "all-MiniLM-L6-v2-int8"


def test_a_machine_whose_int8_fails_the_check_uses_fp32_and_remembers_it(tmp_path, monkeypatch):
    """Where int8 disagrees with fp32 (made real here by demanding exact agreement), the default is
    fp32, no int8 file is left, and the reason is kept beside the cache: a later process (a real
    one, with the usual threshold) does not build again and chooses fp32 too."""
    import shutil
    import subprocess
    import sys

    from headroom.memory import EmbedderUnavailableError, _quantize

    LocalEmbedder(int8=False).embed(["load"])
    shutil.copy(onnx_cache_path(), onnx_cache_path(str(tmp_path)))  # the fp32 export, to build from
    monkeypatch.setattr(_quantize, "MIN_COSINE", 0.99999)
    assert LocalEmbedder(cache_dir=str(tmp_path)).name == "all-MiniLM-L6-v2"
    assert not onnx_cache_path(str(tmp_path), int8=True).exists()
    (marker,) = tmp_path.glob("*.rejected")
    assert "disagrees with fp32" in marker.read_text()
    monkeypatch.undo()
    code = ("from headroom.memory import LocalEmbedder; "
            f"print(LocalEmbedder(cache_dir={str(tmp_path)!r}).name)")
    later = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert later.stdout.strip() == "all-MiniLM-L6-v2", later.stderr
    assert not onnx_cache_path(str(tmp_path), int8=True).exists()
    with pytest.raises(EmbedderUnavailableError, match="disagrees with fp32"):  # insisting says why
        LocalEmbedder(int8=True, cache_dir=str(tmp_path)).embed(["x"])


@pytest.mark.parametrize("strict", ["lowest", "mean"])
def test_an_int8_variant_that_disagrees_is_refused_and_not_written(tmp_path, monkeypatch, strict):
    """The agreement check is real, on each of its two bounds: asked for exact agreement, which
    int8 cannot give, the build fails typed and leaves no file (so no later process trusts it)."""
    from headroom.memory import EmbedderUnavailableError, _quantize
    from headroom.memory._local_model import ModelFiles

    model = ModelFiles.at()
    fp32 = onnx_cache_path(None, model)
    LocalEmbedder().embed(["load"])  # the shared fp32 export exists
    target = tmp_path / "int8.onnx"
    if strict == "mean":
        monkeypatch.setattr(_quantize, "MIN_MEAN_COSINE", 0.99999)
    with pytest.raises(EmbedderUnavailableError, match=f"disagrees with fp32.*{strict}"):
        _quantize.build_int8(fp32, target, model, min_cosine=0.99999 if strict == "lowest" else 0.9)
    assert not target.exists() and list(tmp_path.iterdir()) == []
