"""Reading the JSON-lines records the node processes write (see
:mod:`etcdraft.demo.toy`): whole files for the verdict, new lines as they grow for the
live view. A process killed mid-write leaves a torn last line, which is not read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["JsonlTail", "read_jsonl", "read_new_lines"]


def read_new_lines(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The objects on the complete lines of ``path`` after byte ``offset``, and the
    offset just past the last complete line (lines that do not parse as a JSON object
    are skipped; a missing file has none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    out: list[dict[str, Any]] = []
    for line in data[:end].splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out, offset + end


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete, parsable line of ``path``."""
    return read_new_lines(path)[0]


class JsonlTail:
    """New complete lines of a growing JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        out, self.offset = read_new_lines(self.path, self.offset)
        return out
