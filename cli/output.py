"""Record writers for ``audioid identify``: JSON lines, CSV and an aligned table, each flushed per record.

Only the standard library: this module is imported when the CLI starts.
"""
from __future__ import annotations

import csv
import json
from typing import IO, Any, Callable, Sequence

FORMATS = ("jsonl", "csv", "table")


class JsonlWriter:
    """One JSON object per line, keys in field order."""

    def __init__(self, out: IO[str], fields: Sequence[str]):
        self.out, self.fields = out, tuple(fields)

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps({k: record.get(k) for k in self.fields}) + "\n")
        self.out.flush()


class CsvWriter:
    """A header row, then one row per record; ``None`` is written as an empty cell, lists (``neighbours``) as
    JSON."""

    def __init__(self, out: IO[str], fields: Sequence[str]):
        self.out, self.fields = out, tuple(fields)
        self.csv = csv.writer(out, lineterminator="\n")
        self.csv.writerow(self.fields)
        out.flush()

    def write(self, record: dict[str, Any]) -> None:
        self.csv.writerow([_csv_cell(record.get(k)) for k in self.fields])
        self.out.flush()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


class Column:
    """A table column: header, how to get the cell text from a record, width (None: rest of the line)."""

    def __init__(self, header: str, get: Callable[[dict], Any], width: int | None = None, right: bool = False):
        self.header, self.get, self.width, self.right = header, get, width, right

    def cell(self, record: dict) -> str:
        v = self.get(record)
        return "" if v is None else str(v)


def _fit(text: str, width: int | None, right: bool, keep_end: bool = False) -> str:
    if width is None:
        return text
    if len(text) > width:
        text = (".." + text[len(text) - width + 2:]) if keep_end else (text[: width - 2] + "..")
    return text.rjust(width) if right else text.ljust(width)


class TableWriter:
    """Fixed-width columns streamed row by row (widths are chosen up front, long cells are shortened)."""

    def __init__(self, out: IO[str], columns: Sequence[Column]):
        self.out, self.columns = out, list(columns)
        self._row({c.header: c.header for c in self.columns}, header=True)
        self.out.write("  ".join("-" * (c.width or len(c.header)) for c in self.columns) + "\n")
        out.flush()

    def _row(self, cells: dict[str, str], header: bool = False) -> None:
        parts = [_fit(cells[c.header], c.width, c.right and not header, keep_end=(c.header == "path"))
                 for c in self.columns]
        self.out.write("  ".join(parts).rstrip() + "\n")

    def write(self, record: dict[str, Any]) -> None:
        self._row({c.header: c.cell(record) for c in self.columns})
        self.out.flush()


def _num(key: str, fmt: str) -> Callable[[dict], str | None]:
    return lambda r: None if r.get(key) is None else format(r[key], fmt)


def _window(r: dict) -> str | None:
    if r.get("query_start_s") is None:
        return None
    return f"{r['query_start_s']:.1f}-{r['query_end_s']:.1f}"


def _details(r: dict) -> str | None:
    if r.get("error"):
        return r["error"]
    return " / ".join(x for x in (r.get("title"), r.get("artist")) if x) or None


def result_columns(path_width: int) -> list[Column]:
    """The table columns of an identify record; the path column is as wide as the longest input path (max 60)."""
    return [
        Column("path", lambda r: r.get("path"), max(4, min(path_width, 60))),
        Column("status", lambda r: r.get("status"), 8),
        Column("label", lambda r: r.get("label"), 24),
        Column("score", lambda r: r.get("score") if r.get("status") != "error" else None, 5, right=True),
        Column("conf", _num("confidence", ".2f"), 4, right=True),
        Column("offset_s", _num("offset_s", ".2f"), 8, right=True),
        Column("speed", _num("speed", ".3f"), 5, right=True),
        Column("pitch", _num("pitch", ".3f"), 5, right=True),
        Column("query_s", _window, 11),
        Column("class", lambda r: r.get("class"), 8),
        Column("title / artist / error", _details),
    ]


def make_writer(fmt: str, out: IO[str], fields: Sequence[str], path_width: int = 40):
    if fmt == "jsonl":
        return JsonlWriter(out, fields)
    if fmt == "csv":
        return CsvWriter(out, fields)
    if fmt == "table":
        return TableWriter(out, result_columns(path_width))
    raise ValueError(f"unknown format {fmt!r}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _sim(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_report(rep: dict) -> str:
    """Text of ``audioid index report`` (see :func:`audioid.index.report.drift_report`)."""
    lines = [f"tracks           {rep['tracks']}",
             "class balance    " + ", ".join(f"{k} {v}" for k, v in sorted(rep["class_balance"].items())), ""]
    head = f"{'':<12}{'n':>6}  {'accuracy':>9}  {'decided':>9}  {'abstained':>9}  {'nn sim':>7}"

    def row(name: str, s: dict) -> str:
        return (f"{name:<12}{s['n']:>6}  {_pct(s['accuracy']):>9}  {_pct(s['accuracy_decided']):>9}  "
                f"{_pct(s['abstention']):>9}  {_sim(s['nn_similarity_median']):>7}")

    lines += ["Prequential: the class each added track got before the index learnt it, against its label.",
              head, row("all", rep["predicted"])]
    lines += [row(c, s) for c, s in rep["per_class"].items()]
    if not rep["predicted"]["n"]:
        lines.append("(no predictions yet: they are made when labelled tracks are added with `audioid index add`)")
        return "\n".join(lines)
    classes = list(rep["confusion"])
    predicted = classes + ["unknown"]
    lines += ["", "confusion (rows: label, columns: predicted)",
              f"{'':<12}" + "".join(f"{p:>10}" for p in predicted)]
    lines += [f"{c:<12}" + "".join(f"{rep['confusion'][c].get(p, 0):>10}" for p in predicted) for c in classes]
    lines += ["", "trend (oldest first)", f"{'from':<22}" + head[12:]]
    lines += [f"{t['from']:<22}" + row("", t)[12:] for t in rep["trend"]]
    return "\n".join(lines)
