"""The demo's terminal view (a live redraw or a line per second) and its summary."""

from __future__ import annotations

import math
import shutil
from typing import IO

from etcdraft.demo.check import DemoResult


class _View:
    def __init__(self, mode: str, out: IO[str]) -> None:
        isatty = bool(getattr(out, "isatty", lambda: False)())
        self.mode = ("live" if isatty else "lines") if mode == "auto" else mode
        self.out = out
        self.drawn = 0
        self.last_line = -math.inf

    def frame(self, lines: list[str]) -> None:
        if self.mode != "live":
            return
        width = max(40, shutil.get_terminal_size((100, 24)).columns - 1)
        buf = []
        if self.drawn:
            buf.append(f"\x1b[{self.drawn}F")
        for line in lines:
            buf.append("\x1b[2K" + _clip(line, width) + "\n")
        buf.append("\x1b[J")
        self.out.write("".join(buf))
        self.out.flush()
        self.drawn = len(lines)

    def line(self, text: str, now: float) -> None:
        if self.mode != "lines" or now - self.last_line < 1.0:
            return
        self.last_line = now
        self.out.write(text + "\n")
        self.out.flush()

    def event(self, text: str) -> None:
        if self.mode == "lines":
            self.out.write("  * " + text + "\n")
            self.out.flush()

    def finish(self) -> None:
        self.drawn = 0


def _clip(line: str, width: int) -> str:
    # lines hold only ASCII escape codes at the start of cells; clip on visible text
    visible = 0
    out = []
    i = 0
    while i < len(line):
        if line[i] == "\x1b":
            j = line.find("m", i)
            if j < 0:
                break
            out.append(line[i : j + 1])
            i = j + 1
            continue
        if visible >= width:
            break
        out.append(line[i])
        visible += 1
        i += 1
    return "".join(out) + ("\x1b[0m" if "\x1b" in line else "")


def _bar(fraction: float, width: int = 30) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def summary_text(res: DemoResult, title: str) -> str:
    fo = ", ".join(f"{ms:.0f} ms" for ms in res.failovers) or "none"
    pending = [f for f in res.faults if f["ms"] is None]
    lines = [
        "",
        title,
        f"  blocks          {res.blocks} in {res.seconds:.1f}s "
        f"({res.blocks / res.seconds if res.seconds else 0:.1f}/s), {res.acked} acknowledged",
        f"  failovers       {len(res.failovers)}: {fo}"
        + (f" ({len(pending)} pending at the end)" if pending else ""),
        f"  double signs    {res.double_signs}",
        f"  gaps            {res.gaps}",
        f"  order           {res.order_violations} violations",
        f"  node crashes    {res.unexpected_exits}",
    ]
    if res.interrupted:
        lines.append("  (interrupted)")
    if res.ok:
        lines.append("  result          OK: every invariant held")
    else:
        lines.append("  result          FAILED: " + "; ".join(res.problems))
    return "\n".join(lines)
