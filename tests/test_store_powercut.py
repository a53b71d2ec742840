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
# Every STRIDE-th cut point (both variants together cover every point when STRIDE
# is 2; ``ITB_CUT_STRIDE=1`` sweeps every point in both variants: the nightly run).
STRIDE = int(os.environ.get("ITB_CUT_STRIDE", "4"))


def _week(cut_at=-1, half=False):
    """Run the week on a fresh image, power failing at flash operation ``cut_at``.
    Returns (harness, flash context, cut happened)."""
    fs, ctx = lfs.make(GEOMETRY)
    h = wl.Harness(fs)
    ctx.cut_at = ctx.ops + cut_at if cut_at >= 0 else -1  # after the store is created
    ctx.half = half
    try:
        h.run(wl.WEEK, wl.WEEK_END)
    except OSError:
        assert not ctx.powered
        fs.abandon()
        return h, ctx, True
    h.runner.journal.close()
    return h, ctx, False


def _ops_in_week():
    fs, ctx = lfs.make(GEOMETRY)
    h = wl.Harness(fs)
    base = ctx.ops
    h.run(wl.WEEK, wl.WEEK_END)
    ops = ctx.ops - base  # closing the files afterwards is not part of the week
    h.runner.journal.close()
    return ops


OPS = _ops_in_week()


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


def check_cut(k, half):
    h, ctx, cut = _week(k, half)
    assert cut, "flash operation %d never came" % k
    t_cut = h.now
    real = list(h.board.calls)
    inflight = h.inflight
    fs, _ctx = lfs.make(GEOMETRY, buffer=ctx.buffer)
    store = st.Store(fs)
    late = []  # the recovered runner's lines, after the truth prefix below
    runner, info = store.recover(h.board, late.append, clock=(t_cut + OUTAGE_MS, OUTAGE_MS))
    ctrl = runner.ctrl
    # Ledger record seq n is trace line n (line 0 is the config header). Whatever
    # was synced is recovered; a program cut short may have landed anyway (flash
    # reports the failure after the data is in): then the controller did apply it
    # and no stroke or answer left after it, so the truth is the recovered prefix.
    n = 1 + info.last_seq
    assert h.durable <= n <= len(h.lines), (k, h.durable, n, len(h.lines))
    lines = h.lines[:n]
    lines.append(encode({"k": "power_cut", "t": t_cut}))
    lines.extend(late)
    h.lines = lines
    late.clear()
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
    return 1


@pytest.mark.sr("SR-25", "SR-26", "SR-23")
@pytest.mark.parametrize("half", [False, True], ids=["clean", "half-page"])
def test_power_cut_at_every_flash_operation_of_the_week(half):
    """Every program/erase point of the week (see the module docstring)."""
    points = range(1 if half else 0, OPS, STRIDE) if STRIDE > 1 else range(OPS)
    cuts = 0
    for k in points:
        cuts += check_cut(k, half)
    assert cuts == len(points) > 0
    print("%s: %d cut points of %d flash operations" % ("half-page" if half else "clean",
                                                       cuts, OPS))
