"""The demo's output: progress lines and the side-by-side table, rich on a terminal when
installed, plain text otherwise (the plain table is README.md's exactly)."""

from __future__ import annotations

import contextlib
import importlib.util
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from connguard.demo.report import SCENARIOS, Report, Row

PLAIN_WIDTH = 100


def wrap(text: str, width: int, indent: int = 0, first: int = 0) -> list[str]:
    """*text* in lines of at most *width* (a word longer than that gets a line of its own,
    whole), the first line indented by *first*, the others by *indent*."""
    return textwrap.wrap(
        text, width, initial_indent=" " * first, subsequent_indent=" " * indent,
        break_long_words=False, break_on_hyphens=False,
    ) or [""]  # fmt: skip


class Out:
    """Progress lines and tables: rich on a terminal when installed, plain text otherwise."""

    def __init__(self, stream: TextIO, color: bool,
                 labels: dict[str, str] | None = None) -> None:
        self.stream = stream
        #: the scenario labels progress lines are aligned to
        self.labels = labels if labels is not None else SCENARIOS
        self.console: Any = None
        if color and stream.isatty() and importlib.util.find_spec("rich") is not None:
            from rich.console import Console

            self.console = Console(file=stream, highlight=False)

    def line(self, text: str = "", style: str | None = None) -> None:
        if self.console is not None:
            self.console.print(text, style=style, markup=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def text(self, text: str, style: str | None = None, indent: int = 0, first: int = 0) -> None:
        """A message that may be long (an error): wrapped at word boundaries to the terminal
        (PLAIN_WIDTH when piped), the first line indented by *first*, the others by
        *indent*."""
        width = self.console.width if self.console is not None else PLAIN_WIDTH
        for line in wrap(text, width, indent, first):
            self.line(line, style)

    @contextlib.contextmanager
    def running(self, text: str) -> Iterator[None]:
        if self.console is None:
            yield
            return
        with self.console.status(text, spinner="dots"):
            yield

    def progress(self, row: Row, label: str) -> None:
        if self.console is not None:
            for text, style in progress_lines(row, label, self.console.width, self.labels):
                self.console.print(text, style=style, markup=False, overflow="ignore", crop=False)
            return
        width = max(len(text) for text in self.labels.values())
        if row.problem:
            prefix = f"  {row.engine:<9}  {label:<{width}}  could not run: "
            self.text(prefix + row.problem, "yellow", indent=13)
            return
        mark = "ok" if row.failures == 0 else "!!"
        self.line(f"{mark} {row.engine:<9}  {label:<{width}}  {_numbers(row, gap='  ')}")
        if row.failures and row.sample:
            self.text(row.sample, "dim", indent=13, first=13)

    def table(self, report: Report) -> None:
        if self.console is None:
            self.stream.write(plain_table(report) + "\n")
            self.stream.flush()
            return
        from rich.text import Text

        for segments in table_layout(report, self.console.width):
            self.console.print(
                Text.assemble(*segments), no_wrap=True, overflow="ignore", crop=False
            )


def _numbers(row: Row, gap: str) -> str:
    return gap.join((
        f"{row.requests:>3} req", f"{row.errors:>2} err", f"{row.wrong:>2} wrong",
        f"{row.lost:>2} lost", f"peak {row.peak:>2}", f"{row.seconds:>4.1f} s",
    ))  # fmt: skip


def progress_lines(row: Row, label: str, width: int,
                   labels: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """One scenario's result on a terminal *width* columns wide: ``(text, style)`` lines.
    The engine is the section's heading; a label too long for the line wraps at word
    boundaries under itself, never cut; a problem or error text wraps likewise."""
    style = "green" if row.failures == 0 else ("red" if row.engine == "connguard" else "yellow")
    if row.problem:
        text = f"-- {label}: could not run: {row.problem}"
        return [(text, "yellow") for text in wrap(text, width, indent=3)]
    numbers = _numbers(row, gap=" ")
    longest = max(len(text) for text in (labels or SCENARIOS).values())
    room = width - 3 - 2 - len(numbers)
    words = max(len(word) for word in label.split()) if label.split() else 0
    label_width = max(min(longest, room), words, 8)
    parts = wrap(label, label_width)
    mark = "ok" if row.failures == 0 else "!!"
    lines = [(f"{mark} {parts[0]:<{label_width}}  {numbers}", style)]
    lines += [(f"   {part}", style) for part in parts[1:]]
    if row.failures and row.sample:
        lines += [(text, "dim") for text in wrap(row.sample, width, indent=3, first=3)]
    return lines


COLUMNS = ("req", "err", "wrong", "lost", "peak")


def _cells(row: Row | None) -> list[str]:
    if row is None:
        return ["-"] * len(COLUMNS)
    if row.problem:
        return ["n/a"] * len(COLUMNS)
    return [str(v) for v in (row.requests, row.errors, row.wrong, row.lost, row.peak)]


LEGEND = (
    "req = requests (or operations), err = errors, wrong = another request's result, lost = "
    "acknowledged writes not in the database, peak = most server connections seen at once"
)


#: the legend as README.md shows it under the table
README_LEGEND = [
    "req = requests (or operations), err = errors, wrong = another request's result, lost = "
    "acknowledged writes",
    "not in the database, peak = most server connections seen at once",
]


def plain_table(report: Report) -> str:
    """The side-by-side table as plain text (what README.md shows)."""
    return "\n".join("".join(text for text, _ in line) for line in table_layout(report))


def table_layout(report: Report, width: int | None = None) -> list[list[tuple[str, str]]]:
    """The side-by-side table (README.md's layout: one row per scenario, stock Django's
    columns then connguard's), as lines of ``(text, style)`` segments.

    Without *width*, README.md's table exactly. With one (a terminal's), the same layout
    fitted to it when it is narrower: columns as narrow as their headers and numbers,
    scenario names wrapped at word boundaries (never cut), the legend wrapped to the width.
    """
    names = report.names()
    labels = [report.label(n) for n in names]
    label_width = max([len(label) for label in labels] + [8])
    widths = [4, 4, 6, 5, 5]
    sep = " "
    half = sum(widths) + len(sep) * (len(widths) - 1)
    if width is not None and label_width + 6 + 2 * half > width:
        cells = [_cells(report.rows.get((n, e))) for n in names for e in ("stock", "connguard")]
        widths = [
            max([len(head)] + [len(row[i]) for row in cells]) for i, head in enumerate(COLUMNS)
        ]
        half = sum(widths) + len(sep) * (len(widths) - 1)
        longest_word = max([len(w) for label in labels for w in label.split()] + [8])
        label_width = max(longest_word, min(label_width, width - 6 - 2 * half))

    def cols(values: Sequence[str], styles: Sequence[str] = ()) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for i, (value, w) in enumerate(zip(values, widths, strict=True)):
            out.append((sep if i else "", ""))
            out.append((f"{value:>{w}}", styles[i] if styles else ""))
        return out

    lines: list[list[tuple[str, str]]] = [
        [(f"{'':<{label_width}}   {' stock Django '.center(half, '-')}   "
          f"{' connguard '.center(half, '-')}", "bold")],
        [(f"{'scenario':<{label_width}}   ", "bold"), *cols(COLUMNS), ("   ", ""), *cols(COLUMNS)],
    ]  # fmt: skip
    for name, label in zip(names, labels, strict=True):
        parts = wrap(label, label_width, indent=2) if width is not None else [label]
        line: list[tuple[str, str]] = [(f"{parts[0]:<{label_width}}   ", "")]
        for i, engine in enumerate(("stock", "connguard")):
            row = report.rows.get((name, engine))
            line += [("   ", "")] if i else []
            line += cols(_cells(row), _styles(row, engine))
        lines.append(line)
        lines += [[(part, "")] for part in parts[1:]]
    legend = README_LEGEND
    if width is not None and max(len(text) for text in legend) > width:
        legend = wrap(LEGEND, width)
    lines += [[(text, "dim")] for text in legend]
    return lines


def _styles(row: Row | None, engine: str) -> list[str]:
    """Colours of a row's cells on a terminal: failures red (connguard) or yellow (stock)."""
    if row is None or row.problem:
        return ["yellow" if row is not None else ""] * len(COLUMNS)
    bad = "bold red" if engine == "connguard" else "yellow"
    failures = (None, row.errors, row.wrong, row.lost, None)
    return ["" if n is None else (bad if n else "green") for n in failures]
