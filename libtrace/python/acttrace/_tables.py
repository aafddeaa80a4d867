"""_tables.py: the TSV tables users write by hand (bounds, weights to zero):
a header naming the columns, '#' lines and blank lines skipped, errors that
name the file and line."""
import csv
import os

from ._lib import Error


def read_table(path, columns, what):
    """[(line number, {column: field})] of the rows after the header; the
    header must name every column of `columns` (others are ignored)."""
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = [(n, line) for n, line in enumerate(f, 1)
                     if line.strip() and not line.startswith("#")]
    except OSError as e:
        raise Error(f"{path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise Error(f"{path}: not UTF-8 text") from None
    if not lines:
        raise Error(f"{path}: empty {what} (expected a header: {' '.join(columns)})")
    header_line, header = lines[0][0], next(csv.reader([lines[0][1]], delimiter="\t"))
    header = [h.strip() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise Error(f"{path}:{header_line}: header lacks column '{missing[0]}' "
                    f"(expected {', '.join(columns)})")
    col = {c: header.index(c) for c in columns}
    rows = []
    for n, line in lines[1:]:
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) < len(header):
            raise Error(f"{path}:{n}: {len(fields)} fields, the header has {len(header)}")
        rows.append((n, {c: fields[i] for c, i in col.items()}))
    return path, rows
