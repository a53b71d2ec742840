"""Power cut at every flash operation of a scripted week, on a real littlefs image
(littlefs-python), then remount, recover, retry and continue (SR-23, SR-25, SR-26).

Each cut point runs the week (``workload.WEEK``) with a block device that loses
power at flash operation ``k`` (the operation is not done, or half done: a
half-programmed page), remounts the image as it is, recovers the controller from
the store, retries the command that was in flight with the same id, runs 26 h on
and checks:

- the image mounts and the store recovers without any storage alarm: a clean
  power cut never loses a prescription (SR-25);
- counted strokes >= real strokes and <= real + 1 (SR-26);
- the retried command is applied exactly once: the prescription generation equals
  the number of confirms the clinician saw accepted (SR-26);
- the 24 h window sum is never below the mass of the real strokes in it (SR-4);
- the reference model (independent of the firmware) accepts the whole trace: caps,
  restart rule with the outage's upper bound, basal resumption (SR-3, SR-11, SR-23).
"""

import json
import os

import pytest
from itb import store as st
from itb.trace import encode

from host_tools.testkit import lfs
from host_tools.testkit import workload as wl
from host_tools.testkit.model import check_trace

GEOMETRY = lfs.PICO
OUTAGE_MS = 5 * wl.MIN
# Cut points: every STRIDE-th flash operation, from 0 in the clean variant and from
# 1 in the half-page one: with STRIDE 2 (CI) every operation is cut once, in one of
# the two ways; ``ITB_CUT_STRIDE=1`` cuts every operation both ways (nightly).
STRIDE = int(os.environ.get("ITB_CUT_STRIDE", "2"))


class Week:
    """The week run once on a logging block device: every flash operation with the
    truth at the moment it started (trace lines, real strokes, command in flight,
    accepted generations, time, lines synced). The image at a cut point is the
    initial image with the operations before it applied: the same image a run
    that loses power at that operation leaves (littlefs stops at the first failed
    operation), without running the week again for every point."""

    def __init__(self):
        fs, ctx = lfs.make(GEOMETRY)
        self.h = h = wl.Harness(fs)
        self.image0 = bytes(ctx.buffer)
        self.marks = []
        ctx.log = []
        ctx.on_op = lambda: self.marks.append(
            (len(h.lines), len(h.board.calls), h.inflight, h.gens, h.now, h.durable))
        h.run(wl.WEEK, wl.WEEK_END)
        self.ops = ctx.log[: len(self.marks)]
        ctx.on_op = None
        h.runner.journal.close()  # closing is not part of the week
        self.lines = list(h.lines)
        self.calls = list(h.board.calls)

    def images(self, points, half):
        """Yield ``(k, image)`` for the cut points in increasing order."""
        img = bytearray(self.image0)
        done = 0
        for k in points:
            while done < k:
                lfs.apply_op(img, self.ops[done], GEOMETRY["block_size"])
                done += 1
            cut = bytearray(img)
            if half and self.ops[k][0] == "p":
                lfs.apply_op(cut, self.ops[k], GEOMETRY["block_size"], half=True)
            yield k, cut


WEEK = Week()


def _real_mass_24h(lines, real, now):
    """Mass (ng_hi) of the strokes the motor really made in (now - 24 h, now]."""
    made = set(n for _t, n, _v in real)
    total = 0
    for line in lines:
        if '"k":"stroke"' in line:
            rec = json.loads(line)
            if rec["n"] in made and rec["t"] > now - wl.DAY:
                total += rec["ng_hi"]
    return total


def check_cut(k, half, image):
    n_lines, n_calls, inflight, gens, t_cut, durable = WEEK.marks[k]
    h = wl.Harness.__new__(wl.Harness)  # the truth at the cut, continued below
    h.board = wl.Motor()
    h.board.calls = WEEK.calls[:n_calls]
    h.inflight, h.gens, h.now, h.next_id = None, gens, t_cut, 10**6
    real = list(h.board.calls)
    fs, _ctx = lfs.make(GEOMETRY, buffer=image)
    store = st.Store(fs)
    late = []  # the recovered runner's lines, after the truth prefix below
    runner, info = store.recover(h.board, late.append, clock=(t_cut + OUTAGE_MS, OUTAGE_MS))
    ctrl = runner.ctrl
    # Ledger record seq n is trace line n (line 0 is the config header). Whatever
    # was synced is recovered; a program cut short may have landed anyway (flash
    # reports the failure after the data is in): then the controller did apply it
    # and no stroke or answer left after it, so the truth is the recovered prefix.
    n = 1 + info.last_seq
    assert durable <= n <= n_lines, (k, durable, n, n_lines)
    lines = WEEK.lines[:n]
    lines.append(encode({"k": "power_cut", "t": t_cut}))
    lines.extend(late)
    h.lines = lines
    runner.trace = lines.append
    where = "cut at flash op %d%s (t=%d): %s" % (k, " half" if half else "", t_cut, vars(info))
    assert not info.damaged and not info.problems, where
    for code in ("PRESCRIPTION_ROLLBACK", "STORAGE_CORRUPT"):
        assert code not in ctrl.alarms.entries, where
    assert len(real) <= ctrl.stroke_seq <= len(real) + 1, where
    now = runner.now
    assert ctrl.window.sums(now)[0] >= _real_mass_24h(lines, real, now), where
    h.runner = runner
    h.now = now
    if inflight is not None:
        res = h.command(inflight[0]["name"], inflight[0]["args"], inflight[0]["role"],
                        inflight[0]["id"])
        if res["ok"] and inflight[0]["name"] == "confirm" and res.get("replayed"):
            h.gens += 1  # applied before the cut: the retry only reads its result
    assert ctrl.rx_gen == h.gens, where
    h.run_to(now + 26 * wl.HOUR)
    problems = check_trace(lines)
    assert problems == [], (where, problems)
    store.close()


def _untraced():
    # a worker needs no coverage tracing (the sweep covers nothing new; traced, it
    # takes twice as long under ``make test``)
    import sys

    sys.settrace(None)


def _sweep(args):
    half, points = args
    failures = []
    for k, image in WEEK.images(points, half):
        try:
            check_cut(k, half, image)
        except AssertionError as e:
            failures.append(str(e)[:2000])
    return len(points), failures


@pytest.mark.sr("SR-25", "SR-26", "SR-23")
def test_power_cut_at_every_flash_operation_of_the_week():
    """Every program/erase point of the week (see the module docstring), cut
    cleanly or leaving a half-programmed page, on both cores."""
    import multiprocessing

    total = len(WEEK.ops)
    jobs = []
    for half in (False, True):
        points = list(range(1 if half and STRIDE > 1 else 0, total, STRIDE))
        mid = len(points) // 2
        jobs += [(half, points[:mid]), (half, points[mid:])]
    try:
        pool = multiprocessing.get_context("fork").Pool(2, initializer=_untraced)
    except ValueError:  # pragma: no cover - no fork (not Linux): one process
        results = [_sweep(job) for job in jobs]
    else:
        with pool:
            results = pool.map(_sweep, jobs)
    cuts = sum(r[0] for r in results)
    failures = [f for r in results for f in r[1]]
    assert not failures, "%d of %d cut points failed; first: %s" % (
        len(failures), cuts, failures[0])
    print("\n%d cut points (stride %d, clean and half-page) of %d flash operations"
          % (cuts, STRIDE, total))
    if STRIDE <= 2:
        assert cuts >= total  # every flash operation was cut at least once
