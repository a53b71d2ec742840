"""An independent, deliberately simple model of SAFETY_RULES.md that reads a runner
trace (JSONL records, ``itb/trace.py``) and recomputes the invariants from scratch.

It imports nothing from ``firmware/itb``: the fluid path is a list of intervals on
a "volume pushed" coordinate, window sums are brute force over half-open windows,
caps are recomputed from the SR-3 formula, and fractions (CPython) stand in for
the firmware's scaled integers. It is slow on purpose; it only has to be right.

``Model.feed(record)`` takes records in order and raises ``Violation`` naming the
rule when an invariant fails. Invariants that need the controller's internal
figures (conservation, SR-14) are checked by the property machine with
``Model.conservation_terms``.

``check_trace(lines)`` checks a whole JSONL trace (e.g. ``out/spinal_titration/trace.jsonl``)
and returns its violations; from the shell::

    python -m host_tools.testkit.model TRACE.jsonl [TRACE.jsonl ...]

prints ``OK <n> records`` or every violation, and exits 1 on any violation (2 on an
unreadable or malformed trace).
"""

import argparse
import json
import sys
from fractions import Fraction

DAY = 86_400_000
HOUR = 3_600_000

# Device defaults (SAFETY_RULES.md SR-2/SR-19/SR-22 and ITB_REFERENCE.md), written
# out here rather than imported from the firmware.
DEFAULTS = {
    "stroke_nl": 2000,
    "tubing_nl": 140_000,
    "catheter_length_mm": 900,
    "max_daily_dose_ng": 2_000_000,
    "max_bolus_ng": 100_000,
    "max_rate_nl_per_min": 1_000_000,
    "min_rate_nl_per_day": 20_000,
    "volume_accuracy_permille": 145,
    "low_reservoir_nl": 4_000_000,
    "low_reservoir_days": 5,
    "settle_ms": HOUR,
    "taper_down_pct": 20,
    "up_pct": {"spinal": 30, "cerebral": 15, "paediatric": 15},
}


class Violation(AssertionError):
    """An invariant failed: ``rule`` (e.g. "SR-5") and a message with the time."""

    def __init__(self, rule, message):
        AssertionError.__init__(self, "%s: %s" % (rule, message))
        self.rule = rule


def _ceil(a, b):
    return -((-a) // b)


def _restart_pct(dur):
    """SR-11 restart cap (percent) for an interruption of upper-bound ``dur`` ms
    (None: unknown, long): exactly 4 h is not "longer than 4 h", 24 h is 50 %."""
    if dur is None:
        return 50
    return 100 if dur <= 4 * HOUR else (75 if dur < DAY else 50)


class Model:
    """``overrides``: device configuration overrides (``firmware/itb/drugs.py`` field
    names). Without them the model adopts the trace's ``config`` record; with them
    the record must agree (a trace is never checked against another device)."""

    def __init__(self, overrides=None):
        self.overrides = None if overrides is None else dict(overrides)
        self._configure(self.overrides)
        self.n_records = 0
        self.t = 0
        self.state = "UNPROGRAMMED"
        self.dose = 0
        self.x = 0  # volume pushed out of the tip so far (nL)
        # fluid intervals on the exit coordinate: [start, end, conc]
        self.fluid = [[0, self.dv, 0]]
        self.res_conc = 0
        self.fill = 0
        self.v = 0
        self.delivered_pg = 0
        self.filled_pg = 0
        self.aspirated_pg = 0
        self.counted = []  # (t, ng) for SR-4/5
        self.pending = None  # stroke intent awaiting its outcome: (n, src, nl)
        self.rx = None
        self.peak = 0
        self.prepared = {}  # hash -> (command, args)
        self.last_cmd = None
        self.alarms = set()
        self.fault = False
        self.fault_seen_ms = -10 * DAY
        self.power_seen_ms = -10 * DAY
        self.segs = []  # basal timeline: (t, dose, running)
        self.no_increase_until = -1
        self.restart = None  # (interruption start, slack ms or None)
        self.track = None  # [start_t, P Fraction nL, delivered nL, highest rate nL/ms]
        self._late = []  # findings of a handler, reported once it has finished
        self.last_basal_ms = -1
        self.running_since = -1
        self.counts = {"strokes": 0, "checks": 0}
        self.violations = []
        self.cut = None  # power failure: (t, dose, quiet before it)
        # SR-11 check of an automatic restart, due once its basal record has been
        # read: (t, pct, base, dose before, cause)
        self.restart_due = None
        self.last_good_ms = -1  # last stroke that reached the catheter (ok, unknown)
        self.stall = None  # motor fault: [last good ms, dose, checkable, fault gap ms]

    def _configure(self, overrides):
        p = dict(DEFAULTS)
        p["up_pct"] = dict(DEFAULTS["up_pct"])
        for key, value in (overrides or {}).items():
            origin = key[3:-4] if key.startswith("up_") and key.endswith("_pct") else None
            if origin in p["up_pct"]:  # the firmware's up_<origin>_pct fields (SR-8)
                p["up_pct"][origin] = value
            else:
                p[key] = value
        self.p = p
        self.stroke = p["stroke_nl"]
        # SR-22: 0.0026 mL/cm = 2.6 nL per 0.1 mm... = 260 nL/mm
        self.dv = p["tubing_nl"] + p["catheter_length_mm"] * 260
        self.band = self.dv * 20 // 100
        self.min_gap = _ceil(self.stroke * 60_000, p["max_rate_nl_per_min"])

    # ------------------------------------------------------------------ fluid path
    def _conc_range(self, a, b):
        """Concentrations of fluid on exit coordinates [a, b) (reservoir beyond)."""
        out = []
        for s, e, c in self.fluid:
            if e > a and s < b:
                out.append(c)
        if b > self.x + self.dv:
            out.append(self.res_conc)
        return out

    def _push(self, nl):
        """nL leave the tip: nominal pg delivered; the reservoir fluid enters."""
        a, b = self.x, self.x + nl
        pg = 0
        for s, e, c in self.fluid:
            lo, hi = max(s, a), min(e, b)
            if hi > lo:
                pg += (hi - lo) * c
        end = self.fluid[-1][1]
        if self.fluid[-1][2] == self.res_conc:
            self.fluid[-1][1] = end + nl
        else:
            self.fluid.append([end, end + nl, self.res_conc])
        self.x = b
        keep = self.x - self.band - 1
        self.fluid = [f for f in self.fluid if f[1] > keep]
        return pg

    def tip_conc(self):
        for _s, e, c in self.fluid:
            if e > self.x and c:
                return c
        return self.res_conc

    def path_pg(self):
        pg = 0
        for s, e, c in self.fluid:
            lo, hi = max(s, self.x), min(e, self.x + self.dv)
            if hi > lo:
                pg += (hi - lo) * c
        return pg

    def conservation_terms(self):
        """``(filled, delivered, in path, in reservoir, aspirated)`` in pg (SR-21)."""
        return (
            self.filled_pg,
            self.delivered_pg,
            self.path_pg(),
            (self.fill - self.v) * self.res_conc,
            self.aspirated_pg,
        )

    # ------------------------------------------------------------------ caps
    def caps(self):
        """SR-3 caps recomputed: prescription caps or the defaults."""
        p = self.p
        chi = max(self._conc_range(self.x, self.x + self.dv + 1) + [self.res_conc])
        sm = _ceil(self.stroke * chi, 1000) or 1
        d, peak = self.dose, max(self.peak, self.dose)
        if self.state == "MIN_RATE":
            d = peak = _ceil(self.min_rate * self.tip_conc(), 1000)
        # the project's reading of SR-3: defaults follow the highest basal dose in
        # effect in the trailing 24 h, so a reduction does not shrink the cap
        recent = max([dose for dose, _dur, _after in self._window_doses(self.t)], default=0)
        d, peak = max(d, recent), max(peak, recent)
        cap24 = min(2 * d + p["max_bolus_ng"], p["max_daily_dose_ng"])
        cap1 = (_ceil(p["max_bolus_ng"], sm) + _ceil(_ceil(peak, 24), sm)) * sm
        if self.rx:
            cap24 = self.rx.get("cap_24h_ng") or cap24
            cap1 = self.rx.get("cap_1h_ng") or cap1
        return cap24, cap1

    def window_sum(self, t, w):
        return sum(m for (u, m) in self.counted if t - w < u <= t)

    # ------------------------------------------------------------------ feed
    def feed(self, rec):
        """Take the next trace record; a failed invariant is appended to
        ``violations`` (and raised again if ``strict``)."""
        self.n_records += 1
        due = self.restart_due
        if due is not None and (rec["k"] not in ("basal", "alarm") or rec["t"] > due[0]):
            # the boot's own records (alarms, the new basal) have been read
            self.restart_due = None
            self._guard(self._check_auto_restart, due)
        self._guard(self._feed, rec)

    def finish(self):
        """The trace has ended: run the checks still due; returns ``violations``."""
        due, self.restart_due = self.restart_due, None
        if due is not None:
            self._guard(self._check_auto_restart, due)
        return self.violations

    def _guard(self, check, arg):
        found = []
        try:
            check(arg)
        except Violation as v:
            found.append(v)
        found += self._late
        self._late = []
        self.violations += found
        if found and self.strict:
            raise found[0]

    def _feed(self, rec):
        k = rec["k"]
        t = rec["t"]
        if t < self.t:
            if k == "stroke":
                raise Violation("SR-23", "stroke time went back from %d to %d" % (self.t, t))
            if k in ("cmd", "result"):  # a stale command, refused (SR-23)
                getattr(self, "_on_" + k)(rec)
                return
            raise Violation("SR-23", "trace time went back from %d to %d" % (self.t, t))
        if k in ("advance", "stroke", "cmd", "power_cut"):
            self.check_reservoir_alarms()
        self._integrate(t)
        self.t = t
        getattr(self, "_on_" + k)(rec)

    strict = False

    def _on_config(self, rec):
        cfg = rec.get("cfg") or {}
        if self.n_records != 1:
            raise ValueError("a config record must be the first of its trace")
        if self.overrides is not None and dict(cfg) != self.overrides:
            raise ValueError(
                "the trace ran with config %r, the model was given %r" % (cfg, self.overrides)
            )
        self._configure(cfg)

    def _on_advance(self, rec):
        self.check_delivery_continues(rec["t"])

    def _on_cmd(self, rec):
        self.last_cmd = rec["cmd"]

    def _on_result(self, rec):
        self.auto_restart_ms = -1  # a basal record after a command is the command's
        cmd = self.last_cmd or {}
        name = cmd.get("name")
        if not rec["ok"]:
            if not rec.get("reason"):
                raise Violation("SR-14", "refusal without a reason code")
            return
        if rec.get("replayed"):
            return
        if self.stall is not None and name not in ("acknowledge", "prepare"):
            self.stall[2] = False  # a change during the fault: not the plain case
        if name == "prepare":
            self.prepared[rec["hash"]] = (cmd["args"]["command"], cmd["args"].get("args", {}))
            return
        if name == "confirm":
            inner, args = self.prepared.pop(cmd["args"]["hash"])
            self._apply(inner, args, rec)
        else:
            self._apply(name, cmd.get("args", {}), rec)

    def _apply(self, name, args, rec):
        t = self.t
        if name == "refill":
            self._note_empty()  # a refill that ends an empty period ends an interruption
            partial = args.get("partial", 0)
            r = self.fill - self.v
            if partial:
                discarded = min(max(r, 0), args["aspirated_nl"])
                self.fill = r - discarded + args["volume_nl"]
            else:
                discarded = r
                self.fill = args["volume_nl"]
            self.aspirated_pg += discarded * self.res_conc
            self.filled_pg += args["volume_nl"] * args["concentration_ug_per_ml"]
            self.v = 0
            self.res_conc = args["concentration_ug_per_ml"]
            self._note_empty()
            self._reset_track()
        elif name == "prime":
            self.aspirated_pg += self.path_pg()
            c = self.res_conc if args["contents"] == "drug" else 0
            self.fluid = [[self.x, self.x + self.dv, c]]
            self.filled_pg += self.dv * c
        elif name == "program":
            self.rx = dict(args)
            self.peak = args["daily_dose_ng"]
            # therapy starts here: an outage is measured from it, not from a priming
            # stroke before it (SR-11 "interruption" of therapy)
            self.last_good_ms = t
            if args.get("screening_dose_ng"):
                self.no_increase_until = t + DAY  # SR-10
                limit = 12 * HOUR if args.get("start_rule") == "eu" else 8 * HOUR
                k = 1 if args.get("screening_effect_ms", 0) > limit else 2
                if args["daily_dose_ng"] > k * args["screening_dose_ng"]:
                    raise Violation("SR-10", "first program over the start dose at %d" % t)
        elif name == "flex":
            self.peak = max(s[1] for s in args["steps"])
        elif name in ("set_daily_dose", "titrate", "taper"):
            self.peak = 0  # continuous from now on (a resume may keep a flex program)
        elif name == "port_injection":
            self.counted.append((t, args["dose_ng"]))
        elif name == "min_rate":
            self.min_rate = args["rate_nl_per_day"]
        elif name == "emergency_stop" and self.state == "MIN_RATE":
            pass
        elif name == "set_clock_offset":
            self._reset_track()
        if name == "emergency_stop":
            self.min_rate = self.p["min_rate_nl_per_day"]

    min_rate = 0

    def _on_stroke(self, rec):
        t = rec["t"]
        src = rec["src"]
        nl = rec["nl"]
        # the intent precedes its outcome (SR-26), also when it breaks a rule below
        self.pending = (rec["n"], src, nl)
        allowed = {
            "RUNNING": ("basal", "bolus", "patient_bolus"),
            "MIN_RATE": ("min_rate",),
            "UNPROGRAMMED": ("prime", "calibration"),  # a bench pump only
        }.get(self.state, ())
        # A stroke that breaks a rule is still booked (counted, tracked) before the
        # first finding is raised, so the findings after it are not its echoes.
        found = []
        if src not in allowed:
            found.append(
                Violation("SR-16/17/27", "%s stroke in state %s at %d" % (src, self.state, t))
            )
        # SR-4 upper bound: highest concentration within the band around the stroke
        hi = max(self._conc_range(self.x - self.band, self.x + nl + self.band))
        m = _ceil(nl * hi, 1000)
        if rec["ng_hi"] != m:
            found.append(
                Violation(
                    "SR-4", "stroke %d counted %d ng, model says %d" % (rec["n"], rec["ng_hi"], m)
                )
            )
        self.counted.append((t, m))
        self.counted = [(u, x) for (u, x) in self.counted if u > t - DAY - 1]
        caps = self.caps()
        for w, cap, label in ((DAY, caps[0], "24 h"), (HOUR, caps[1], "1 h")):
            s = self.window_sum(t, w)
            if s > cap:
                found.append(
                    Violation("SR-5", "%s window at %d holds %d ng > cap %d" % (label, t, s, cap))
                )
        self.counts["strokes"] += 1
        if src in ("basal", "min_rate"):
            self.last_basal_ms = t
            if self.track is not None:
                self.track[2] += nl
                if not found:
                    self._check_track(t)
        if found:
            raise found[0]

    def _on_outcome(self, rec):
        """SR-26 write-ahead: the motor reports only on a stroke whose intent record
        came first (one action, one stroke)."""
        if self.pending is None or self.pending[0] != rec["n"]:
            raise Violation(
                "SR-26", "outcome of stroke %r at %d without its intent" % (rec["n"], self.t)
            )
        n, src, nl = self.pending
        res = rec["res"]
        if res == "power_cut":
            self._power_fails()  # the runner writes no power_cut record for this one
            return  # resolved at power_on (SR-26: counts as delivered)
        self.pending = None
        if res in ("ok", "unknown"):
            before = self.tip_conc()
            self.delivered_pg += self._push(nl)
            self.v += nl
            self._note_empty()
            if self.fault:
                self._stall_ends()
                self.fault = False
                self._reset_track()
            self.last_good_ms = self.t
            if self.tip_conc() != before:
                self._reset_track()
        else:
            if not self.fault:
                self._stall_starts()
            self.fault = True
            self.fault_seen_ms = self.t
            self._end_track()

    def _stall_starts(self):
        """A stall or occlusion begins. Its end is checked against SR-11 only in the
        plain case: running for two days without another fault, power event or empty
        reservoir, and nothing but the motor changing until it ends."""
        rate = self._rate_nl_per_ms()
        checkable = (
            self.state == "RUNNING"
            and self.last_good_ms >= 0
            and rate > 0
            and self.t - self.fault_seen_ms > 2 * DAY
            and self.t - self.power_seen_ms > 2 * DAY
            and self.reservoir_can_deliver()
        )
        # "Interruption": no drug over the trailing max(1 h, two stroke intervals)
        gap = max(HOUR, 2 * self.stroke / rate) if rate > 0 else 0
        self.stall = [self.last_good_ms, self.dose, checkable, gap]

    def _stall_ends(self):
        """SR-11 after a motor fault: the first basal after an interruption longer
        than 4 h (since the last stroke that reached the patient) is capped like a
        restart. Checked with a margin: only when the fault outlasted twice the
        interruption threshold, so the controller must have marked it."""
        st, self.stall = self.stall, None
        if st is None or not st[2] or self.state != "RUNNING" or self.dose != st[1]:
            return
        gap = self.t - st[0]
        if gap > 4 * HOUR and gap >= 2 * st[3]:
            base = self._restart_base(st[0])
            self.restart_due = (self.t, _restart_pct(gap), base, st[1], "a motor fault")

    # time of an automatic SR-11 restart (a boot, or RESTART_REDUCED after a stall or
    # an empty reservoir) whose new basal record has not been read yet; -1: none
    auto_restart_ms = -1

    def _on_alarm(self, rec):
        if rec["ev"] == "raise":
            self.alarms.add(rec["code"])
            if rec["code"] == "RESTART_REDUCED":
                self.auto_restart_ms = rec["t"]
            if rec["code"] == "CAP_HOLD":
                self._end_track()
        elif rec["ev"] == "clear":
            self.alarms.discard(rec["code"])
            if rec["code"] == "CAP_HOLD":
                self._reset_track()

    def _on_switch(self, rec):
        self._note_empty()
        self.switch = rec["on"]
        self._note_empty()
        self._reset_track()

    switch = 0

    def _on_rtc(self, rec):
        self._reset_track()

    def _on_session_end(self, rec):
        pass

    def _on_battery(self, rec):
        pass  # an alarm only: its raise/clear records are checked as alarms

    def _on_power_cut(self, rec):
        self._power_fails()

    def _power_fails(self):
        if self.stall is not None:
            self.stall[2] = False
        quiet = (
            self.t - self.fault_seen_ms > 2 * DAY
            and self.t - self.power_seen_ms > 2 * DAY
            and self.reservoir_can_deliver()
            and not self.fault
        )
        self.cut = (self.t, self.dose, quiet)
        self.power_seen_ms = self.t
        self._end_track()
        if self.state == "RUNNING":
            # no drug while the power is off: the outage is an interruption
            self.segs.append((self.t, self.dose, False))
            self.restart = (self.t, 0)

    def _on_power_on(self, rec):
        if self.pending is not None:
            n, src, nl = self.pending
            self.pending = None
            self.delivered_pg += self._push(nl)
            self.v += nl
        self.power_seen_ms = self.t
        self.power_upper = rec["upper_ms"]
        cut, self.cut = self.cut, None
        if self.state == "RUNNING" and not rec.get("boot_loop"):
            self.auto_restart_ms = self.t
            if cut is not None and cut[2]:
                upper = rec["upper_ms"]
                if upper is not None:
                    upper = max(upper, self.t - cut[0])  # never below the lower bound
                pct = _restart_pct(upper)
                if pct < 100:
                    base = self._restart_base(cut[0])
                    self.restart_due = (self.t, pct, base, cut[1], "a power outage")
            self.segs.append((self.t, self.dose, True))  # RUNNING resumes by itself (SR-11)
        self._reset_track()

    power_upper = 0

    def _on_rx(self, rec):
        pass  # a prescription generation for the ledger (SR-25): the basal record follows

    def _on_basal(self, rec):
        t, new, state = rec["t"], rec["ng_day"], rec["state"]
        was_running = self.state == "RUNNING"
        now_running = state == "RUNNING"
        quiet = (
            t - self.fault_seen_ms > 2 * DAY
            and t - self.power_seen_ms > 2 * DAY
            and self.reservoir_can_deliver()
            and not self.fault
        )
        found = None
        try:
            if was_running and now_running and new != self.dose and quiet:
                self._check_basal_change(t, new)
            if not was_running and now_running and self.segs and quiet and self.restart:
                self._check_restart(t, new)
            if now_running and new > self.dose and t < self.no_increase_until and was_running:
                raise Violation(
                    "SR-10/SR-11", "basal increased at %d inside the no-increase window" % t
                )
        except Violation as v:
            found = v  # the change is still applied below, then reported
        if was_running and not now_running:
            self.restart = (t, 0)
        if self.stall is not None and (state != self.state or new != self.dose):
            self.stall[2] = False
        if now_running and new != self.dose and (not was_running or self.auto_restart_ms == t):
            # a resume with a new dose and an automatic SR-11 restart (after a reset,
            # a stall, an empty reservoir) run a continuous program at the new dose
            self.peak = 0
        self.auto_restart_ms = -1
        self.state = state
        self.dose = new
        self.segs.append((t, new, now_running and not self.empty))
        self.segs = self.segs[-400:]
        self._reset_track()
        if found is not None:
            raise found

    # ------------------------------------------------------------------ rules
    def _window_doses(self, t):
        """Running doses in effect in (t - 24 h, t] with their in-window durations,
        after the last interruption flag: list of (dose, duration, after_interruption)."""
        out = []
        last_int = -1
        for i, (_s, _d, run) in enumerate(self.segs):
            if not run:
                last_int = i
        for i, (s, d, run) in enumerate(self.segs):
            if not run:
                continue
            end = self.segs[i + 1][0] if i + 1 < len(self.segs) else t
            lo = max(s, t - DAY)
            if end > t - DAY or i + 1 == len(self.segs):
                out.append((d, end - lo, i > last_int))
        return out

    def _check_basal_change(self, t, new):
        origin = (self.rx or {}).get("origin", "spinal")
        up = self.p["up_pct"][origin]
        doses = self._window_doses(t)
        lowest = min((d for d, dur, _a in doses), default=None)
        if lowest is not None and new * 100 > (100 + up) * lowest:
            raise Violation("SR-8", "dose %d at %d over +%d%% of %d" % (new, t, up, lowest))
        settled = [d for d, dur, after in doses if after and dur >= self.p["settle_ms"]]
        if settled:
            top = max(settled)
            down = self.p["taper_down_pct"]
            if new * 100 < (100 - down) * top:
                raise Violation("SR-9", "dose %d at %d under -%d%% of %d" % (new, t, down, top))

    def _check_restart(self, t, new):
        start = self.restart[0]
        dur = t - start
        before = [(s, d, run) for (s, d, run) in self.segs if s <= start]
        last = None
        for i in range(len(before) - 1, -1, -1):
            s, d, run = before[i]
            if not run:
                continue
            end = before[i + 1][0] if i + 1 < len(before) else start
            if last is None:
                last = d
            if end - s >= self.p["settle_ms"]:
                last = d
                break
        if last is None:
            return
        pct = 100 if dur <= 4 * HOUR else (75 if dur < DAY else 50)
        if pct == 100:
            return
        if new * 100 > pct * last:
            raise Violation(
                "SR-11", "restart at %d with %d after %d ms > %d%% of %d" % (t, new, dur, pct, last)
            )
        if pct < 100:
            self.no_increase_until = t + DAY

    def _restart_base(self, start):
        """An upper bound of the SR-11 base for an interruption that began at
        ``start``: the highest running dose from the last one settled before it
        (walking back over the timeline) up to ``start``, the current dose included.
        Deliberately generous: the model's timeline splits segments where the
        controller's may not, and a generous base can only miss a fault, never
        invent one."""
        base = self.dose
        for i in range(len(self.segs) - 1, -1, -1):
            s, d, run = self.segs[i]
            if s > start or not run:
                continue
            end = min(self.segs[i + 1][0], start) if i + 1 < len(self.segs) else start
            base = max(base, d)
            if end - s >= self.p["settle_ms"]:
                break
        return base

    def _check_auto_restart(self, due):
        """SR-11 after a reset or a motor fault: RUNNING resumes by itself, and the
        first basal after an interruption longer than 4 h (power: the outage's upper
        bound, SR-23; unknown = long) is at most 75 % (4-24 h) or 50 % (24 h and
        over, unknown) of the last settled dose; a reduced restart allows no
        increase for 24 h."""
        t, pct, base, before, cause = due
        if self.state != "RUNNING":
            return
        if self.dose * 100 > pct * base:
            raise Violation(
                "SR-11",
                "restart after %s at %d with %d > %d%% of %d" % (cause, t, self.dose, pct, base),
            )
        if self.dose < before:
            self.no_increase_until = max(self.no_increase_until, t + DAY)

    # ------------------------------------------------------------------ tracking
    def _rate_nl_per_ms(self):
        if self.state == "MIN_RATE":
            return Fraction(self.min_rate, DAY)
        if self.state == "RUNNING" and self.tip_conc() > 0:
            return Fraction(self.dose * 1000, self.tip_conc() * DAY)
        return Fraction(0)

    def _end_track(self):
        """Close the tracking interval: it must hold up to now before it is dropped
        (a stroke withheld with no CAP_HOLD, say, is not forgotten at the next reset).
        A finding is reported once the current record has been handled."""
        tr, self.track = self.track, None
        if tr is not None:
            try:
                self._check_track(self.t, tr)
            except Violation as v:
                self._late.append(v)

    def _reset_track(self):
        self._end_track()
        if (
            self.state in ("RUNNING", "MIN_RATE")
            and not self.fault
            and self.peak in (0, self.dose)
            and "CAP_HOLD" not in self.alarms
            and self.reservoir_can_deliver()
        ):
            self.track = [self.t, Fraction(0), 0, self._rate_nl_per_ms()]

    def _integrate(self, t):
        if self.track is not None and t > self.t:
            rate = self._rate_nl_per_ms()
            self.track[1] += rate * (t - self.t)
            self.track[3] = max(self.track[3], rate)

    def _check_track(self, t, tr=None):
        """SR-12/SR-21 tracking: delivered basal volume stays within one stroke (plus
        the millisecond rounding and the minimum stroke gap) of the programmed
        volume since the tracking interval began."""
        tr = tr or self.track
        rate = max(self._rate_nl_per_ms(), tr[3])
        slack = self.stroke + rate * (self.min_gap + 2)
        self.counts["checks"] += 1
        if tr[2] - tr[1] > slack:
            raise Violation(
                "SR-12",
                "delivered %d nL > programmed %s + one stroke since %d (t=%d)"
                % (tr[2], float(tr[1]), tr[0], t),
            )
        if tr[1] - tr[2] > slack:
            raise Violation(
                "SR-21",
                "delivered %d nL lags programmed %.0f nL by more than a"
                " stroke since %d (t=%d)" % (tr[2], float(tr[1]), tr[0], t),
            )

    def check_delivery_continues(self, t):
        """SR-19: basal is never stopped on a computed remainder while R_o > 0 and the
        switch has not tripped; equivalently the tracking interval must hold at ``t``."""
        if self.track is not None:
            self._check_track(t)

    # ------------------------------------------------------------------ reservoir
    def reservoir(self):
        r = self.fill - self.v
        tol = _ceil(self.v * self.p["volume_accuracy_permille"], 1000)
        return r, r - tol, r + tol

    def _note_empty(self):
        # An empty reservoir is an interruption (SR terms): while running, the basal
        # timeline shows it as a period without drug, so the SR-11 base skips doses
        # that were programmed but never delivered. Basal-rule checks also skip the
        # days around it rather than re-deriving the controller's marking.
        empty = not self.reservoir_can_deliver()
        if empty and self.res_conc:  # not the pump before its first fill
            self.fault_seen_ms = self.t
            if self.stall is not None:
                self.stall[2] = False
            self._end_track()
        if empty != self.empty and self.state == "RUNNING" and self.res_conc:
            self.segs.append((self.t, self.dose, not empty))
            if empty:
                self.restart = (self.t, 0)
        self.empty = empty

    empty = False

    def reservoir_can_deliver(self):
        return not self.switch and self.reservoir()[2] > 0

    def check_reservoir_alarms(self):
        """SR-19: LOW_RESERVOIR active when R_p <= the volume threshold, EMPTY_SOON
        when R_p <= 0 (checked against raise/clear events)."""
        if self.res_conc <= 0:
            return
        r, rp, ro = self.reservoir()
        if rp <= self.p["low_reservoir_nl"] and "LOW_RESERVOIR" not in self.alarms:
            raise Violation("SR-19", "R_p=%d nL at %d but no LOW_RESERVOIR" % (rp, self.t))
        if rp <= 0 and "RESERVOIR_EMPTY_SOON" not in self.alarms:
            raise Violation("SR-19", "R_p=%d nL at %d but no RESERVOIR_EMPTY_SOON" % (rp, self.t))


# ---------------------------------------------------------------------- whole traces
# The record kinds of ``firmware/itb/trace.py`` (duplicated: the model imports
# nothing from the firmware).
TRACE_KINDS = (
    "config", "cmd", "advance", "outcome", "switch", "rtc", "battery", "session_end",
    "power_cut", "power_on", "stroke", "result", "alarm", "basal", "rx",
)


def parse_record(line):
    """One trace line -> its record; ``ValueError`` unless it is a JSON object with a
    known kind ``k`` and an integer time ``t``."""
    rec = json.loads(line)  # json.JSONDecodeError is a ValueError
    if type(rec) is not dict or rec.get("k") not in TRACE_KINDS:
        raise ValueError("not a trace record: %r" % (line[:60],))
    if type(rec.get("t")) is not int:
        raise ValueError("trace record without an integer t: %r" % (line[:60],))
    return rec


def check_model(lines, overrides=None):
    """Feed every line of a trace (an iterable of JSON lines, blank lines skipped) to
    a fresh ``Model``; returns the model after ``finish``. ``ValueError`` (naming the
    line) on a malformed line or a trace that does not start with its config record."""
    model = Model(overrides)
    n = 0
    for i, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            line = line.decode("ascii")
        line = line.strip()
        if not line:
            continue
        try:
            rec = parse_record(line)
            if n == 0 and rec["k"] != "config":
                raise ValueError("a trace starts with its config record")
            model.feed(rec)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError("line %d: %s" % (i, e)) from None
        n += 1
    if n == 0:
        raise ValueError("empty trace")
    model.finish()
    return model


def check_trace(lines, overrides=None):
    """The violations (a list of ``Violation``, empty when the trace is correct) of a
    runner trace given as JSON lines, checked against its own config record (or
    ``overrides``, which must then agree with it). ``ValueError`` on a malformed
    line."""
    return check_model(lines, overrides).violations


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m host_tools.testkit.model",
        description="Check runner traces (JSONL, firmware/itb/trace.py) against the "
        "independent reference model of the safety rules. Prints 'OK <n> records' per "
        "correct trace, else every violation (rule and time). Exit status: 0 all "
        "correct, 1 a violation, 2 an unreadable or malformed trace.",
    )
    ap.add_argument(
        "traces", nargs="+", metavar="TRACE.jsonl",
        help="a runner trace, e.g. out/spinal_titration/trace.jsonl (from itbsim run)",
    )
    a = ap.parse_args(argv)
    status = 0
    for path in a.traces:
        try:
            with open(path) as f:
                model = check_model(f)
        except OSError as e:
            print("%s: cannot read: %s" % (path, e), file=sys.stderr)
            status = 2
            continue
        except ValueError as e:
            print("%s: malformed trace: %s" % (path, e), file=sys.stderr)
            status = 2
            continue
        except (KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
            # a record of the right kind but the wrong shape (a string cfg, a cmd
            # that is not an object...): the trace is malformed, not a violation
            print("%s: malformed trace: %s: %s" % (path, type(e).__name__, e), file=sys.stderr)
            status = 2
            continue
        if model.violations:
            for v in model.violations:
                print("%s: %s" % (path, v))
            status = max(status, 1)
        else:
            print("OK %d records %s" % (model.n_records, path))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
