"""AsyncOpenAI through with_fast_memory: same behaviour, nothing blocking the event loop."""

import asyncio
import inspect
import time

import groq
import openai
import pytest

from headroom._scripted_server import ScriptedServer
from headroom.memory import (
    AsyncMemoryClient,
    AsyncMemoryStream,
    AsyncUserMemory,
    HashEmbedder,
    MemoryClient,
    MemoryStream,
    UserMemory,
    with_fast_memory,
)
from headroom.memory._fast import _AsyncCreate, _Create


@pytest.fixture
def server(local_embedder):
    with ScriptedServer() as srv:
        yield srv


def wrap(server, db_path, user="jane", **kw):
    return with_fast_memory(openai.AsyncOpenAI(base_url=server.base_url, api_key="x"), user_id=user,
                            db_path=db_path, **kw)


def test_async_create_and_awaitable_memory(server, db_path):
    async def main():
        async with wrap(server, db_path) as client:
            assert isinstance(client, AsyncMemoryClient) and isinstance(client.memory, AsyncUserMemory)
            response = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "I prefer Go for CLIs."}])
            assert response.choices[0].message.content == "Thanks, noted: Prefers Go for CLIs."
            assert [m.text for m in await client.memory.get_all()] == ["Prefers Go for CLIs"]
            hits = await client.memory.search("Which language for command line tools?")
            assert hits[0][0].text == "Prefers Go for CLIs"
            await client.memory.add("Works remotely", category="fact")
            assert (await client.memory.stats())["total_chunks"] == 2
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Go for CLIs."}])
            assert "Prefers Go for CLIs" in server.chat_requests()[-1]["messages"][-1]["content"]

    asyncio.run(main())


def test_async_stream(server, db_path):
    server.stream_chunk_size = 3

    async def main():
        client = wrap(server, db_path)
        stream = await client.chat.completions.create(
            model="m", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "We use Kafka."}])
        assert isinstance(stream, AsyncMemoryStream)
        text = ""
        async with stream:
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        assert text == "Thanks, noted: Uses Kafka."
        assert chunk.usage is not None  # the usage chunk came through last
        assert [m.text for m in await client.memory.get_all()] == ["Uses Kafka"]
        await client.close()

    asyncio.run(main())


def test_two_concurrent_streams_for_two_users_do_not_mix(server, db_path):
    server.stream_chunk_size = 2
    server.stream_delay = 0.002

    async def talk(user, fact):
        client = wrap(server, db_path, user=user)
        stream = await client.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": f"We use {fact}."}])
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        memories = [m.text for m in await client.memory.get_all()]
        await client.close()
        return text, memories

    async def main():
        return await asyncio.gather(talk("alice", "Redis"), talk("bob", "Cassandra"))

    (alice_text, alice_mem), (bob_text, bob_mem) = asyncio.run(main())
    assert alice_text == "Thanks, noted: Uses Redis." and alice_mem == ["Uses Redis"]
    assert bob_text == "Thanks, noted: Uses Cassandra." and bob_mem == ["Uses Cassandra"]


class SlowEmbedder(HashEmbedder):
    """Takes 0.3 s per call, so work done on the event loop would freeze it visibly."""

    def embed(self, texts):
        time.sleep(0.3)
        return super().embed(texts)


def test_embedding_and_sqlite_run_off_the_event_loop(server, db_path):
    async def main():
        client = with_fast_memory(openai.AsyncOpenAI(base_url=server.base_url, api_key="x"), user_id="jane",
                                  db_path=db_path, embedder=SlowEmbedder())
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        await client.memory.add("Likes tea")  # one slow embedding
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Tea, please."}])
        done.set()
        await task
        await client.close()
        return ticks

    assert asyncio.run(main()) >= 30  # ~0.6 s of embedding, and the loop kept ticking through it


def test_async_groq(server, db_path):
    async def main():
        client = with_fast_memory(groq.AsyncGroq(base_url=server.base_url.removesuffix("/v1"), api_key="x"),
                                  user_id="jane", db_path=db_path)
        assert isinstance(client, AsyncMemoryClient)
        response = await client.chat.completions.create(
            model="llama", messages=[{"role": "user", "content": "I prefer tabs."}])
        assert response.choices[0].message.content == "Thanks, noted: Prefers tabs."
        await client.close()

    asyncio.run(main())


# -- sync and async stay in step ----------------------------------------------------------------------


def public(cls):
    return {name for name in dir(cls) if not name.startswith("_")}


@pytest.mark.parametrize("sync, aio", [
    (MemoryClient, AsyncMemoryClient), (_Create, _AsyncCreate), (MemoryStream, AsyncMemoryStream)])
def test_sync_and_async_shells_have_the_same_public_signatures(sync, aio):
    assert public(sync) <= public(aio)
    for name in public(sync):
        member = getattr(sync, name)
        if callable(member):
            assert inspect.signature(member) == inspect.signature(getattr(aio, name)), name
            if inspect.iscoroutinefunction(getattr(aio, name)) != (name != "with_options"):
                raise AssertionError(f"{aio.__name__}.{name} should be async unless it only builds an object")


def test_async_memory_mirrors_the_sync_memory_api():
    wiring = {"store", "embedder", "user_id", "close", "attach_worker", "report_stats", "scoring"}
    mirrored = public(UserMemory) - wiring
    for name in mirrored:
        assert inspect.signature(getattr(AsyncUserMemory, name)) == inspect.signature(getattr(UserMemory, name))
        assert inspect.iscoroutinefunction(getattr(AsyncUserMemory, name))
    assert mirrored <= public(AsyncUserMemory)


def test_async_client_with_openai_embeddings_uses_its_own_endpoint(server, db_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    async def main():
        client = with_fast_memory(openai.AsyncOpenAI(base_url=server.base_url, api_key="x"), user_id="jane",
                                  db_path=db_path, use_local_embeddings=False)
        await client.memory.add("Prefers tabs")
        found = await client.memory.search("Prefers tabs")
        await client.close()
        return found

    found = asyncio.run(main())
    assert found[0][0].text == "Prefers tabs"
    assert sum(r.path == "/v1/embeddings" for r in server.requests) >= 2  # through the sync twin


def test_async_reply_of_only_a_block_is_asked_again(server, db_path):
    replies = iter(['<memory>{"memories": [{"content": "Likes figs"}]}</memory>', "Figs are great."])
    server.script_chat(lambda body: next(replies))

    async def main():
        async with wrap(server, db_path) as client:
            response = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Figs, please."}])
            return response.choices[0].message.content, [m.text for m in await client.memory.get_all()]

    assert asyncio.run(main()) == ("Figs are great.", ["Likes figs"])
