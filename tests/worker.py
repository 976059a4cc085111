"""Run as a separate process by the concurrency tests: one memory operation on a shared file."""

import json
import os
import sys

from headroom.memory import open_memory


def main() -> None:
    command, db_path, user_id, *args = sys.argv[1:]
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
    elif command == "clear":
        print(memory.clear())
    elif command == "search":
        print(json.dumps([[m.text, s] for m, s in memory.search(args[0], top_k=int(args[1]))]))
    memory.close()


if __name__ == "__main__":
    main()
