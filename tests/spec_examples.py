"""Python examples of the documentation, read by section so the tests run them as written.

``docs/guide.md`` ships with the repository. The product spec is also checked where a checkout has
it beside the repository (``../shared/spec/memory-spec.md``, or ``$HEADROOM_SPEC``); a bare clone
runs the guide alone.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
SPEC = Path(os.environ.get("HEADROOM_SPEC", ROOT.parent / "shared" / "spec" / "memory-spec.md"))
DOCS = [GUIDE] + ([SPEC] if SPEC.is_file() else [])


def examples(heading: str, doc: Path = GUIDE) -> list[str]:
    """The ```python blocks under ``heading``, up to the next heading of the same or higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    blocks: list[str] = []
    inside = in_code = False
    for line in doc.read_text().splitlines():
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
