"""Code examples of the spec, read from ../shared/spec/memory-spec.md by section."""

from __future__ import annotations

from pathlib import Path

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "memory-spec.md"


def examples(heading: str) -> list[str]:
    """The ```python blocks under ``heading``, up to the next heading of the same or higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    blocks: list[str] = []
    inside = in_code = False
    for line in SPEC.read_text().splitlines():
        if line.startswith("```"):
            if in_code:
                in_code = False
            else:
                in_code = True
                if inside and line.strip() == "```python":
                    blocks.append("")
            continue
        if in_code:
            if inside and blocks:
                blocks[-1] += line + "\n"
            continue
        if line.startswith("#"):
            depth = len(line) - len(line.lstrip("#"))
            if line.strip() == heading:
                inside = True
            elif inside and depth <= level:
                break
    return blocks
