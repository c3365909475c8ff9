"""Text files and tab-separated tables as users make them: in editors and spreadsheets.

Spreadsheets add byte-order marks, save UTF-16, end lines with CRLF (or a lone CR),
quote cells, add empty trailing columns and, asked for CSV, use commas or semicolons.
:func:`read_text` and :func:`read_table` read all of that, and reject what they cannot
read with errors that name the file, the encoding and the line as an editor shows it.
"""

from __future__ import annotations

import codecs
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import ConfigError

# byte-order marks, longest first: the UTF-32 LE mark begins with the UTF-16 LE one
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)
_SAVE_AS_UTF8 = (
    "Save it as UTF-8 text (in a spreadsheet: 'Text (tab delimited)' with the "
    "character set 'Unicode (UTF-8)', or 'UTF-8 CSV')."
)


def _utf16_without_bom(raw: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' when every other byte of ``raw`` is NUL, else None."""
    head = raw[:4096]
    if len(head) < 2 or len(head) % 2:
        return None
    even_nul, odd_nul = head[0::2].count(0), head[1::2].count(0)
    half = len(head) // 2
    if odd_nul >= 0.9 * half and even_nul == 0:
        return "utf-16-le"
    if even_nul >= 0.9 * half and odd_nul == 0:
        return "utf-16-be"
    return None


def _position(text: str) -> tuple[int, int]:
    """Line and column (1-based, as an editor counts them) just after ``text``."""
    lines = editor_lines(text)
    return len(lines), len(lines[-1]) + 1


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of a user's file, decoded as a spreadsheet or editor may have saved it.

    UTF-8 (with or without a byte-order mark), UTF-16 and UTF-32 with a byte-order mark,
    and UTF-16 without one are read; the mark is dropped.

    Parameters
    ----------
    path : path
    what : str
        What the file is, for messages (e.g. "sessions table").

    Raises
    ------
    ConfigError
        The file is missing, a folder, unreadable, or not in one of these encodings; the
        message names the file, the encoding tried, and where decoding failed.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder, not a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    encoding, name = "utf-8", "UTF-8"
    for bom, codec, label in _BOMS:
        if raw.startswith(bom):
            encoding, name = codec, f"{label} (with a byte-order mark)"
            break
    else:
        if b"\x00" in raw:
            encoding = _utf16_without_bom(raw)
            if encoding is None:
                at = raw.index(b"\x00")
                line, col = _position(raw[:at].decode("utf-8", "replace"))
                raise ConfigError(
                    f"{what} {path} is not a text file: it holds a NUL byte on line "
                    f"{line}, column {col}. {_SAVE_AS_UTF8}"
                )
            name = "UTF-16 (without a byte-order mark)"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line, col = _position(raw[: exc.start].decode(encoding, "replace"))
        bad = raw[exc.start : exc.start + 1].hex()
        hint = (
            " It was probably saved in a legacy 8-bit encoding such as Windows-1252 or Latin-1."
            if encoding == "utf-8"
            else ""
        )
        raise ConfigError(
            f"{what} {path} is not valid {name} text: byte 0x{bad} on line {line}, "
            f"column {col} cannot be decoded ({exc.reason}).{hint} "
            f"{_SAVE_AS_UTF8}"
        ) from None
    return text.lstrip("\ufeff")


def editor_lines(text: str) -> list[str]:
    """Split ``text`` into lines as a text editor shows them (LF, CRLF or a lone CR end a line)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _is_skipped(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


@dataclass(frozen=True)
class TableRow:
    """One data line of a table: its line number (1-based, as an editor shows it) and cells."""

    line: int
    cells: dict


@dataclass(frozen=True)
class Table:
    """A tab-separated table as read by :func:`read_table`."""

    path: str
    columns: tuple[str, ...]
    header_line: int
    delimiter: str
    rows: tuple[TableRow, ...]

    def where(self, line: int, column: str | None = None) -> str:
        """``'<what> <path>, line N, column 'c''`` for messages."""
        col = f", column {column!r}" if column else ""
        return f"{self.path}, line {line}{col}"


def _split_cells(line: str, delimiter: str, where: str) -> list[str]:
    try:
        return [c.strip() for c in next(csv.reader([line], delimiter=delimiter, strict=True), [])]
    except csv.Error as exc:
        raise ConfigError(
            f"{where}: cannot split the line into cells ({exc}); a cell that starts "
            "with a double quote must end with one, and a cell cannot span lines"
        ) from None


def _guess_delimiter(header: str, columns: Sequence[str]) -> str:
    """Tab, or the comma or semicolon of a spreadsheet's CSV when that splits the known columns."""

    def known(d):
        return sum(c.strip().strip('"') in columns for c in header.split(d))

    best = max(("\t", ",", ";"), key=known)
    return best if known(best) > known("\t") else "\t"


def _header_columns(cells: list[str], where: str) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    for i, name in enumerate(cells, 1):
        if name and name in seen:
            raise ConfigError(
                f"{where} (the header): column {name!r} appears twice (columns "
                f"{seen[name]} and {i}); rename or delete one"
            )
        seen.setdefault(name, i)
    return tuple(cells)


def _row_cells(cells: list[str], columns: tuple[str, ...], where: str, header_line: int) -> dict:
    for i, value in enumerate(cells, 1):
        if not value:
            continue
        if i > len(columns):
            raise ConfigError(
                f"{where}: cell {i} ({value!r}) lies beyond the header's {len(columns)} "
                f"columns (line {header_line}); is there a tab inside a value, or a "
                "column without a name in the header?"
            )
        if not columns[i - 1]:
            raise ConfigError(
                f"{where}: cell {i} ({value!r}) is in a column that has no name in "
                f"the header (line {header_line}); name the column or empty the cell"
            )
    return {c: (cells[i] if i < len(cells) else "") for i, c in enumerate(columns) if c}


def read_table(path: str | Path, what: str = "table", columns: Sequence[str] = ()) -> Table:
    """Read a tab-separated table with a header row, as a spreadsheet or editor writes it.

    Accepted: a byte-order mark, UTF-16/UTF-32 (:func:`read_text`); LF, CRLF or CR line
    ends; cells in double quotes; empty trailing cells and columns without a name that
    hold no values; ``#`` comment lines and blank lines anywhere. A header that splits
    into more of ``columns`` by commas or semicolons than by tabs is read as that CSV.

    Parameters
    ----------
    path : path
    what : str
        What the table is, for messages.
    columns : sequence of str
        Known column names (only used to recognise a comma/semicolon-separated header).

    Returns
    -------
    Table
        Rows keep their line numbers as an editor shows them (comments and blank lines
        counted); cells are stripped, named columns only.

    Raises
    ------
    ConfigError
        Naming the file and line: undecodable text, an empty table, a column named twice,
        a value in a column without a name or beyond the header, unbalanced quotes.
    """
    lines = editor_lines(read_text(path, what))
    numbered = [(i, ln) for i, ln in enumerate(lines, 1) if not _is_skipped(ln)]
    if not numbered:
        raise ConfigError(f"{what} {path} is empty (no header row)")
    header_line, header = numbered[0]
    delimiter = _guess_delimiter(header, columns)
    label = f"{what} {path}"
    cols = _header_columns(
        _split_cells(header, delimiter, f"{label}, line {header_line}"), f"{label}, line {header_line}"
    )
    rows = []
    for lineno, line in numbered[1:]:
        where = f"{label}, line {lineno}"
        cells = _split_cells(line, delimiter, where)
        if any(cells):
            rows.append(TableRow(lineno, _row_cells(cells, cols, where, header_line)))
    return Table(path=label, columns=cols, header_line=header_line, delimiter=delimiter, rows=tuple(rows))


def _normalised(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions, swaps."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def close_column(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate that ``name`` most likely misspells, or None.

    Close means equal ignoring case and separators, or one edit (a letter added,
    dropped, changed or two swapped) per four letters of the candidate, at least one.
    """
    n = _normalised(name)
    scored = [(_edit_distance(n, _normalised(c)), c) for c in candidates]
    scored = [(d, c) for d, c in scored if d <= max(1, len(_normalised(c)) // 4)]
    return min(scored)[1] if scored else None
