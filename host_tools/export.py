"""A board's ledger (``Board.export()``) as CSV, JSON Lines or a runner trace.

The ledger holds every runner record except ``power_cut`` (a real power cut
writes nothing, ``itb.store``), each stamped with a sequence number and the wall
clock. The **trace** form is what ``itbsim replay`` reads: the ``config`` record
(the board's device configuration) first, then the records in order. A power cut
writes nothing: the replay (``itb.runner.JournalReplayer``) takes a ``power_on``
while powered as the cut boot recovery found, and a stroke that was under way
gets back the ``power_cut`` outcome recovery gave it. It needs the whole history
(sequence numbers from 1 without a gap); a board that has dropped its oldest
archived records can still export CSV and JSON.
"""

import csv
import io
import json

from itb.trace import encode


class ExportError(ValueError):
    """The ledger cannot be written in the asked form (with the reason)."""


def gaps(records):
    """Sequence numbers missing between consecutive records: ``[(after, before)]``."""
    out = []
    for (a, _r1, _x), (b, _r2, _y) in zip(records, records[1:], strict=False):
        if b != a + 1:
            out.append((a, b))
    return out


def to_trace(records, cfg):
    """Trace lines (without newlines) of ``records`` (``(seq, rtc_ms, record)``)
    under device configuration ``cfg``; ExportError if history is missing."""
    if not records or records[0][0] != 1:
        first = records[0][0] if records else None
        raise ExportError("the board no longer holds its ledger from the start (oldest record"
                          f" {first}): a trace needs the whole history; export csv or json")
    holes = gaps(records)
    if holes:
        raise ExportError(f"the ledger has gaps (after seq {holes[0][0]}): export csv or json")
    lines = [encode({"k": "config", "t": 0, "cfg": cfg})]
    open_stroke = None  # a stroke intent whose outcome is not (yet) in the ledger
    for _seq, _rtc, rec in records:
        if rec["k"] == "power_on" and open_stroke is not None:
            # the power failed during that stroke: its outcome, as boot recovery
            # recorded it (outcomes of a cut are never written to the ledger)
            lines.insert(open_stroke[0], encode({"k": "outcome", "t": open_stroke[1],
                                                 "n": open_stroke[2], "res": "power_cut"}))
        if rec["k"] == "stroke":
            open_stroke = (len(lines) + 1, rec["t"], rec["n"])
        elif rec["k"] in ("outcome", "power_on"):
            open_stroke = None
        lines.append(encode(rec))
    return lines


def to_jsonl(records):
    """One JSON object per record: ``{"seq", "rtc_ms", "record"}``."""
    return [json.dumps({"seq": s, "rtc_ms": r, "record": rec}, sort_keys=True)
            for s, r, rec in records]


CSV_COLUMNS = ("seq", "rtc_ms", "t_ms", "kind", "fields")


def to_csv(records):
    """CSV text: seq, rtc_ms (-1: unknown), t_ms, kind, and the record's other
    fields as compact JSON (one column, so every kind fits one table)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for seq, rtc, rec in records:
        rest = {k: v for k, v in rec.items() if k not in ("k", "t")}
        w.writerow([seq, rtc, rec["t"], rec["k"], json.dumps(rest, sort_keys=True,
                                                             separators=(",", ":"))])
    return buf.getvalue()
