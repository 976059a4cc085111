"""The server's event-stream codec: what the upstream sends, decoded and encoded back the same."""

import asyncio
import re

import pytest

pytest.importorskip("starlette")

from headroom.server._sse import RawEvent, decode, encode  # noqa: E402


def decoded(text: str) -> list:
    async def lines():
        for line in text.split("\n"):
            yield line

    async def collect():
        return [item async for item in decode(lines())]

    return asyncio.run(collect())


def test_events_with_names_comments_and_done():
    stream = (': keep-alive\n\nevent: message_start\ndata: {"type": "message_start"}\n\n'
              'data: {"a":\ndata: 1}\n\ndata: [DONE]\n\ndata: "text"')
    assert decoded(stream) == [("message_start", {"type": "message_start"}), (None, {"a": 1}),
                               (None, RawEvent(None, "[DONE]")), (None, RawEvent(None, '"text"'))]


def test_encoding_gives_back_what_came():
    named = encode({"type": "content_block_delta", "index": 0}, named=True)
    assert named == b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0}\n\n'
    assert encode({"type": "x"}, named=False) == b'data: {"type":"x"}\n\n'
    assert encode(RawEvent("ping", "{}"), named=True) == b"event: ping\ndata: {}\n\n"
    text = (named + encode({"choices": []}, named=False)).decode()
    assert [data for _, data in decoded(text)] == [{"type": "content_block_delta", "index": 0}, {"choices": []}]


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from headroom.server._sse import LineSplitter  # noqa: E402

_line = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
_break = st.sampled_from(["\r\n", "\r", "\n"])


@given(st.lists(st.tuples(_line, _break), max_size=6), _line)
def test_lines_are_the_same_wherever_the_bytes_are_cut(pairs, last):
    text = "".join(line + end for line, end in pairs) + last
    data = text.encode()
    expected = re.split("\r\n|\r|\n", text)  # the format's rule, on the whole text at once
    if expected[-1] == "":
        expected.pop()
    for cut in range(len(data) + 1):
        for second in (cut, (cut + len(data)) // 2):
            splitter = LineSplitter()
            got = splitter.feed(data[:cut]) + splitter.feed(data[cut:second]) + splitter.feed(data[second:])
            assert got + splitter.end() == expected, (cut, second)
