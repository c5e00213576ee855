"""The one table renderer: aligned columns for people, every cell terminal-safe.

Tables are for terminals, so every cell goes through
:func:`~fleetkit.foundation.terminal.terminal_safe` (a node's escape
sequences are shown, never obeyed) and long cells are cut with ``...``.
Machine formats never come through here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fleetkit.foundation.terminal import terminal_safe

#: Widest cell (longer values are cut with "...").
MAX_WIDTH = 60
ELLIPSIS = "..."


def cell(value: object, *, max_width: int | None = MAX_WIDTH) -> str:
    """One cell as shown: control characters escaped, cut to ``max_width``."""
    text = terminal_safe(str(value))
    if max_width is not None and len(text) > max_width:
        return text[: max(0, max_width - len(ELLIPSIS))] + ELLIPSIS
    return text


@dataclass(frozen=True)
class Table:
    """A header and rows of cells, ready to print (the widths fit every cell)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    widths: tuple[int, ...]

    def lines(self, *, rule: bool = False) -> list[str]:
        """The aligned lines; ``rule`` adds a line of dashes under the header."""
        out = [self._line(self.header)]
        if rule:
            out.append(self._line(tuple("-" * w for w in self.widths)))
        out.extend(self._line(row) for row in self.rows)
        return out

    def text(self, *, rule: bool = False) -> str:
        return "".join(line + "\n" for line in self.lines(rule=rule))

    def _line(self, cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, self.widths, strict=True)).rstrip()


def make_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    max_width: int | None = MAX_WIDTH,
) -> Table:
    """Cells made safe and cut, widths computed: the table for :meth:`Table.text`.

    Every row must have as many cells as the header.
    """
    head = tuple(cell(h, max_width=None) for h in header)
    body = tuple(tuple(cell(v, max_width=max_width) for v in row) for row in rows)
    for index, row in enumerate(body):
        if len(row) != len(head):
            raise ValueError(f"row {index} has {len(row)} cells, the header {len(head)}")
    widths = tuple(max([len(head[i]), *(len(r[i]) for r in body)]) for i in range(len(head)))
    return Table(head, body, widths)


def render_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    rule: bool = False,
    max_width: int | None = MAX_WIDTH,
) -> str:
    """Header and rows as aligned text lines (each ending in a newline)."""
    return make_table(header, rows, max_width=max_width).text(rule=rule)
