"""Run as a separate process by the concurrency tests: one memory operation on a shared file."""

import json
import os
import sys

from headroom.memory import open_memory


def background_call(db_path: str, user_id: str, base_url: str, text: str) -> None:
    """One call through with_memory, then hang until killed: the extraction is still queued."""
    import time

    import openai

    from headroom.memory import with_memory

    client = with_memory(openai.OpenAI(base_url=base_url, api_key="x"), user_id=user_id, db_path=db_path)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
    print("called", flush=True)
    time.sleep(120)


def main() -> None:
    command, db_path, user_id, *args = sys.argv[1:]
    if command == "background-call":
        background_call(db_path, user_id, *args)
        return
    memory = open_memory(user_id, db_path)
    if command == "add":
        for text in args:
            memory.add(text)
    elif command == "add-range":
        prefix, count = args[0], int(args[1])
        for i in range(count):
            memory.add(f"{prefix} fact number {i}")
    elif command in ("add-deferred", "add-deferred-crash"):
        memory.add_many(args, source="inline", defer_embedding=True)
        if command == "add-deferred-crash":
            os._exit(0)  # die before the background thread or any exit handler runs
        return  # a normal exit: the exit handler embeds what waits
    elif command == "add-deferred-rounds":  # what with_fast_memory does, round after round
        prefix, rounds = args[0], int(args[1])
        for r in range(rounds):  # the numbers keep every text apart from the near-duplicate rule
            memory.add_many([f"{prefix} round {r} item {i}" for i in range(5)], source="inline",
                            defer_embedding=True)
            memory.flush(timeout=60)
    elif command == "clear":
        print(memory.clear())
    elif command == "search":
        print(json.dumps([[m.text, s] for m, s in memory.search(args[0], top_k=int(args[1]))]))
    memory.close()


if __name__ == "__main__":
    main()
