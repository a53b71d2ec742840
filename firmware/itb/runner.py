"""The one loop every board uses: decide -> persist intent -> one stroke ->
completion or fault, and the next wake-up (DESIGN principle 2).

``Runner`` drives a ``Controller`` for a board object with one method,
``stroke(n, volume_nl, now) -> outcome`` (``ok``, ``stall``, ``occlusion``,
``unknown``, or ``power_cut`` when power failed during the stroke). The stroke's
intent record is appended to the store by the controller before ``stroke`` is
called (SR-26). Every input and output can be written to a trace (``trace.py``)
and ``replay`` reproduces the outputs from the inputs, byte for byte.

The runner is synchronous and sans-clock: the caller says what time it is. The
asyncio app (Pico, virtual board) and the simulator call ``advance(now)`` when
``next_wake()`` comes due.
"""

from itb.controller import MAX_T, Controller
from itb.trace import decode, encode


class PoweredOff(Exception):
    """The runner is powered off: only ``power_on`` is accepted."""


class Runner:
    def __init__(self, controller, board, trace=None):
        """``trace``: callable taking one encoded line (no newline), or None."""
        self.ctrl = controller
        self.board = board
        self.trace = trace
        self.powered = True
        self.now = controller.last_now
        self._basal = None
        self._emit_basal()

    # -- trace helpers
    def _out(self, rec):
        if self.trace is not None:
            self.trace(encode(rec))

    def _events(self, t, events):
        for e in events:
            if e.get("k") == "stroke":
                continue
            rec = dict(e)
            rec["t"] = t
            self._out(rec)

    def _emit_basal(self):
        cur = (self.ctrl.daily_dose_ng(), self.ctrl.state)
        if cur != self._basal:
            self._basal = cur
            self._out({"k": "basal", "t": self.ctrl.last_now, "ng_day": cur[0], "state": cur[1]})

    def _live(self):
        if not self.powered:
            raise PoweredOff("powered off")

    # -- driving
    def next_wake(self):
        """When ``advance`` must next run (ms), -1 if nothing is scheduled."""
        return self.ctrl.next_wake()

    def advance(self, now):
        """Run every wake-up due up to and including ``now``. The ``advance`` record
        is written after the records it caused (trace times never go back), also when
        power failed during it."""
        self._live()
        self._advance(now)
        self._out({"k": "advance", "t": now})

    def _catch_up(self, now):
        # Before an input at ``now``: run what is due first. An ``advance`` record is
        # written only when something was due, so replaying the trace (which holds
        # that record) does not write a second one.
        t = self.ctrl.next_wake()
        if 0 <= t <= now:
            self.advance(now)
        else:
            self._advance(now)

    def _advance(self, now):
        last = -1
        same = 0
        while self.powered:
            t = self.ctrl.next_wake()
            if t < 0 or t > now:
                break
            same = same + 1 if t == last else 0
            if same > 10000:
                raise RuntimeError("controller makes no progress at t=%d" % t)
            last = t
            self._wake(t)
        if self.powered:
            self._events(now, self.ctrl.tick(now))
            self._emit_basal()
            self.now = now

    def _wake(self, t):
        actions = self.ctrl.wake(t)
        self._events(t, actions)
        for a in actions:
            if a.get("k") != "stroke":
                continue
            self._out({"k": "stroke", "t": t, "n": a["n"], "src": a["src"], "nl": a["nl"],
                       "ng_hi": a["ng_hi"], "ng_lo": a["ng_lo"]})
            outcome = self.board.stroke(a["n"], a["nl"], t)
            self._out({"k": "outcome", "t": t, "n": a["n"], "res": outcome})
            if outcome == "power_cut":
                self.powered = False
                return
            self._events(t, self.ctrl.complete(a["n"], outcome, t))
        self._emit_basal()

    def command(self, command, now):
        """Advance to ``now`` and hand one command to the controller; returns its result."""
        if type(now) is int and self.ctrl.last_now <= now <= MAX_T:
            self._catch_up(now)  # a stale time goes to handle(), which refuses it (SR-23)
        self._live()  # power may have failed during a stroke on the way
        self._out({"k": "cmd", "t": now, "cmd": command})
        res = self.ctrl.handle(command, now)
        out = dict(res)
        out["k"] = "result"
        out["t"] = now
        self._out(out)
        self._events(now, self.ctrl.drain_events())
        self._emit_basal()
        return res

    def empty_switch(self, now, tripped):
        self._catch_up(now)
        self._live()
        self._out({"k": "switch", "t": now, "on": 1 if tripped else 0})
        self._events(now, self.ctrl.empty_switch(now, tripped))
        self._emit_basal()

    def set_rtc(self, now, utc_ms):
        self._catch_up(now)
        self._live()
        self._out({"k": "rtc", "t": now, "utc_ms": utc_ms})
        self._events(now, self.ctrl.set_wall_clock(now, utc_ms))
        self._emit_basal()

    def session_end(self, now):
        self._catch_up(now)
        self._live()
        self._out({"k": "session_end", "t": now})
        self._events(now, self.ctrl.session_end(now))

    def power_cut(self, now):
        """Power fails at ``now`` (after everything due before it ran)."""
        self._catch_up(now)
        if self.powered:
            self._out({"k": "power_cut", "t": now})
            self.powered = False

    def power_on(self, now, upper_ms, boot_loop=0):
        """Boot at therapy time ``now`` (= last time + outage lower bound) with the
        outage's upper bound ``upper_ms`` (None: unknown), SR-23/SR-26/SR-27."""
        self._out({"k": "power_on", "t": now, "upper_ms": upper_ms, "boot_loop": boot_loop})
        self.powered = True
        self._events(now, self.ctrl.reboot(now, upper_ms, boot_loop))
        self._emit_basal()
        self.now = now


class _ReplayBoard:
    def __init__(self):
        self.outcomes = []

    def stroke(self, n, volume_nl, now):
        if not self.outcomes:
            raise ValueError("trace has no outcome for stroke %d" % n)
        rn, res = self.outcomes.pop(0)
        if rn != n:
            raise ValueError("trace outcome for stroke %d, runner made %d" % (rn, n))
        return res


def replay(lines, sink=None, store=None):
    """Re-run the inputs of a trace (an iterable of lines, read once, in order).

    Every line the runner writes goes to ``sink`` (a callable); without one they are
    collected and returned as a list. The output equals the input trace when the
    code behaves the same. Motor outcomes are read from the trace: each precedes the
    input record that caused its stroke, so one pass suffices (small heap). Several
    traces may follow each other: each ``config`` record starts a fresh run."""
    out = None
    if sink is None:
        out = []
        sink = out.append
    board = _ReplayBoard()
    runner = None
    for line in lines:
        line = line.strip()
        if not line:
            continue
        rec = decode(line)
        k = rec["k"]
        t = rec["t"]
        if k == "outcome":
            # (n, res) only: a long ``advance`` buffers every outcome it caused
            board.outcomes.append((rec["n"], rec["res"]))
        elif k == "config":
            # a new trace (traces may come back to back): a fresh controller and motor
            sink(encode(rec))
            board = _ReplayBoard()
            runner = Runner(Controller(rec.get("cfg") or None, store), board, sink)
        elif k in ("stroke", "result", "alarm", "basal"):
            continue
        elif runner is None:
            raise ValueError("trace must start with a config record")
        elif k == "cmd":
            try:
                runner.command(rec["cmd"], t)
            except PoweredOff:
                pass
        elif k == "advance":
            runner.advance(t)
        elif k == "switch":
            runner.empty_switch(t, rec["on"])
        elif k == "rtc":
            runner.set_rtc(t, rec["utc_ms"])
        elif k == "session_end":
            runner.session_end(t)
        elif k == "power_cut":
            runner.power_cut(t)
        elif k == "power_on":  # pragma: no branch - decode() admits only the kinds above
            runner.power_on(t, rec["upper_ms"], rec.get("boot_loop", 0))
    return out


def start(config=None, board=None, trace=None, store=None):
    """A controller and runner; writes the ``config`` header to ``trace``."""
    if trace is not None:
        trace(encode({"k": "config", "t": 0, "cfg": config or {}}))
    return Runner(Controller(config, store), board, trace)
