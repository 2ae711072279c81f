"""``etcdraft.logging_setup``: JSON lines off a terminal, human lines on one, the
structured fields; and the library itself never prints."""

from __future__ import annotations

import ast
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcdraft.logging_setup import configure, parse_level

PACKAGE = Path(__file__).resolve().parent.parent / "etcdraft"
#: programs (not library code): they may print (paths relative to the package)
PROGRAMS = {"cli", "demo/run.py", "demo/toy.py"}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_with_structured_fields() -> None:
    out = io.StringIO()
    configure("info", json=True, stream=out)
    log = logging.getLogger("etcdraft.node")
    log.info("became leader: term %d", 7, extra={"node_id": "n1", "term": 7, "height": 3})
    log.debug("hidden")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed", extra={"endpoint": "http://127.0.0.1:2379"})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["level"] == "INFO" and first["logger"] == "etcdraft.node"
    assert first["msg"] == "became leader: term 7"
    assert (first["node_id"], first["term"], first["height"]) == ("n1", 7, 3)
    assert "index" not in first and first["ts"].endswith("Z")
    assert second["endpoint"] == "http://127.0.0.1:2379"
    assert "RuntimeError: boom" in second["exc"]


def test_human_lines_on_a_terminal() -> None:
    out = _Tty()
    configure("DEBUG", stream=out)  # json=None: a terminal gets human lines
    logging.getLogger("etcdraft.fsm").warning(
        "skipping entry", extra={"node_id": "n2", "index": 42}
    )
    text = out.getvalue()
    assert "WARNING etcdraft.fsm: skipping entry [node_id=n2 index=42]" in text
    with pytest.raises(ValueError):
        json.loads(text)


def test_not_a_terminal_means_json_and_reconfiguring_replaces() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure("info", stream=first)
    configure("warning", stream=second)
    ours = [h for h in logging.getLogger().handlers if type(h).__name__ == "_EtcdraftHandler"]
    assert len(ours) == 1
    logging.getLogger("etcdraft.x").warning("hello")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["msg"] == "hello"


def test_levels() -> None:
    assert parse_level("warn") == logging.WARNING
    assert parse_level(" Debug ") == logging.DEBUG
    assert parse_level(15) == 15
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        parse_level("loud")


def test_the_library_never_prints() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in PROGRAMS or rel.split("/")[0] in PROGRAMS or path.name.endswith("_pb2.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders
