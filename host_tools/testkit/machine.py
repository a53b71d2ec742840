"""Hypothesis stateful machine driving the controller through the runner.

Rules send every command of the schema (through prepare/confirm, sometimes late or
with a wrong hash), advance time from 1 ms to days (window edges ±1 ms included),
refill with concentration changes, inject motor faults, cut power, and move the
wall clock. Every runner trace record is fed to the independent reference model
(``model.py``); the invariants below read its findings and compare its figures
with the controller's. Each invariant states its rule in its docstring.

Use from pytest: ``TestController = ControllerMachine.TestCase``.
"""

import json

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from itb import runner as rn
from itb import snapshot
from itb import store as durable
from itb.fs import MemoryFS

from host_tools.testkit.model import DAY, HOUR, Model

MIN = 60_000
# A 10 µL stroke and hourly re-annunciation keep the number of wake-ups and trace
# lines per simulated day small (speed); the rules under test do not depend on them.
CONFIG = {"stroke_nl": 10_000, "realarm_ms": HOUR}
STEPS = 50  # rule steps per run (hypothesis ``stateful_step_count``)
EDGES = [
    1,
    2,
    999,
    1000,
    MIN - 1,
    MIN,
    MIN + 1,
    HOUR - 1,
    HOUR,
    HOUR + 1,
    4 * HOUR,
    4 * HOUR + 1,
    DAY - 1,
    DAY,
    DAY + 1,
]
DT = st.one_of(st.sampled_from(EDGES), st.integers(1, 3 * DAY))
DOSE_FACTORS = st.sampled_from(
    [0, 500, 790, 800, 801, 850, 1000, 1100, 1150, 1151, 1300, 1301, 2000]
)
CONCS = st.sampled_from([500, 1000, 2000, 500, 1000, 2000, 50, 750])
ALLOWED_UNITS = ("ng_per_day", "ng", "nl", "nl_per_day", "ms")
OUTCOMES = st.sampled_from(["ok", "ok", "ok", "stall", "occlusion", "unknown"])


def plain_state(ctrl):
    """The controller's durable state as stored (after a JSON round trip): item name ->
    value, a repeated item (``seen``, the ``+`` parts of a long list) joined in order."""
    state = {}
    for name, value in json.loads(json.dumps(snapshot.save(ctrl))):
        state[name] = state[name] + value if name in state else value
    return state


def _state(ctrl):
    """``plain_state`` with the window log's lazily pruned heads brought to the
    controller's time (queries move them; the sums they give do not depend on it)."""
    state = {k: v for k, v in plain_state(ctrl).items() if not k.startswith("+window.")}
    w = ctrl.window.copy()
    w.sums(ctrl.last_now)
    state["window"] = [w.t[w.head[0]:], w.m[w.head[0]:], w.total]
    return state


class FaultBoard:
    """Motor stand-in: the next ``count`` strokes end with ``mode``."""

    def __init__(self):
        self.mode = "ok"
        self.count = 0

    def stroke(self, n, volume_nl, now):
        if self.count > 0:
            self.count -= 1
            return self.mode
        return "ok"


class ControllerMachine(RuleBasedStateMachine):
    # a list to append finished runs' trace lines to, up to ``record_max`` of them
    # (the MicroPython differential test replays them); None: not kept
    record_to = None
    record_max = 1000

    def __init__(self):
        super().__init__()
        self.model = Model(CONFIG)
        self.board = FaultBoard()
        self.lines = []
        self.fs = MemoryFS()  # the controller's state lives in a durable store
        self.r, _ = durable.boot(self.fs, self.board, CONFIG, self._trace)
        self.ctrl = self.r.ctrl
        self.recoveries = 0
        self.t = 0
        self.next_id = 0
        self.refusals = []
        self.internal = []

    def _trace(self, line):
        self.lines.append(line)
        self.model.feed(json.loads(line))

    def teardown(self):
        """The trace is complete and deterministic: replaying its inputs through a
        fresh controller reproduces every line, byte for byte (the basis of the
        cross-interpreter comparison)."""
        again = rn.replay(self.lines)
        assert again == self.lines, next(
            (i, a, b) for i, (a, b) in enumerate(zip(again, self.lines, strict=False)) if a != b
        )
        if self.record_to is not None and len(self.record_to) < self.record_max:
            self.record_to.append(self.lines)

    # ------------------------------------------------------------------ helpers
    def _send(self, cmd):
        """One command; checks SR-14 on a refusal (state unchanged, one record)."""
        if not self.r.powered:
            return None
        self.r.advance(self.t)
        if not self.r.powered:
            return None
        before = json.dumps(self.ctrl.therapy_state(), sort_keys=True)
        audits = self.ctrl.store.counts.get("cmd", 0)
        res = self.r.command(cmd, self.t)
        after = json.dumps(self.ctrl.therapy_state(), sort_keys=True)
        if res["reason"] == "INTERNAL":
            self.internal.append(res)
        if "allowed" in res and res.get("allowed_unit") not in ALLOWED_UNITS:
            self.internal.append(("allowed value without its unit", res))
        if not res["ok"]:
            self.refusals.append(
                (before == after, self.ctrl.store.counts["cmd"] - audits, res.get("reason"), cmd)
            )
        return res

    def _id(self):
        self.next_id += 1
        return self.next_id

    def two_phase(self, name, args, role="clinician", late=0, wrong=0):
        res = self._send(
            {
                "name": "prepare",
                "id": self._id(),
                "role": role,
                "args": {"command": name, "args": args},
            }
        )
        if res is None or not res["ok"]:
            return res
        if late:
            self.t += 60_001 if late == 1 else 60_000
        h = res["hash"] ^ (1 if wrong else 0)
        return self._send({"name": "confirm", "id": self._id(), "role": role, "args": {"hash": h}})

    def single(self, name, args=None, role="clinician"):
        return self._send({"name": name, "id": self._id(), "role": role, "args": args or {}})

    def _status(self):
        """The controller's ``status()`` (a board answers it over the link)."""
        return self.ctrl.status()

    def dose_like(self, factor):
        v = self._status()["daily_dose_ng"] or 200_000
        return v * factor // 1000 // 100 * 100

    # ------------------------------------------------------------------ set-up
    @initialize(
        conc=st.sampled_from([500, 1000, 2000]),
        dose_ug=st.sampled_from([50, 100, 200, 400, 800]),
        origin=st.sampled_from(["spinal", "cerebral", "paediatric"]),
        patient=st.booleans(),
        prime=st.sampled_from(["drug", "saline"]),
    )
    def setup(self, conc, dose_ug, origin, patient, prime):
        self.two_phase(
            "refill", {"aspirated_nl": 0, "volume_nl": 20_000_000, "concentration_ug_per_ml": conc}
        )
        self.two_phase("prime", {"contents": prime})
        self.t += HOUR
        args = {"daily_dose_ng": dose_ug * 1000, "origin": origin}
        if patient:
            args.update(patient_bolus_ng=20_000, patient_lockout_ms=2 * HOUR, patient_max_per_24h=4)
        self.two_phase("program", args)

    # ------------------------------------------------------------------ rules
    # Time advances carry most of the weight: several rules draw from different scales.
    @rule(dt=DT)
    def advance(self, dt):
        self.t += dt
        if self.r.powered:
            self.r.advance(self.t)

    @rule(dt=st.sampled_from(EDGES))
    def advance_to_edge(self, dt):
        self.advance(dt)

    @rule(hours=st.integers(1, 30))
    def advance_hours(self, hours):
        self.advance(hours * HOUR)

    @rule(days=st.integers(1, 8))
    def advance_days(self, days):
        self.advance(days * DAY)

    @rule(factor=DOSE_FACTORS, late=st.sampled_from([0, 0, 0, 1, 2]), wrong=st.booleans())
    def set_daily_dose(self, factor, late, wrong):
        self.two_phase(
            "set_daily_dose",
            {"daily_dose_ng": self.dose_like(factor)},
            late=late,
            wrong=wrong and late == 0,
        )

    @rule(factor=DOSE_FACTORS, night=st.sampled_from([500, 1000, 1300]))
    def flex(self, factor, night):
        day = self.dose_like(factor)
        self.two_phase(
            "flex", {"steps": [[0, day * night // 1000 // 100 * 100], [480, day], [1320, day]]}
        )

    @rule(
        factor=DOSE_FACTORS,
        pct=st.sampled_from([5, 15, 20, 30, 31]),
        every=st.sampled_from([HOUR, 12 * HOUR, DAY, DAY + 1]),
        up=st.booleans(),
    )
    def plan(self, factor, pct, every, up):
        self.two_phase(
            "titrate" if up else "taper",
            {"target_daily_dose_ng": self.dose_like(factor), "step_pct": pct, "every_ms": every},
        )

    @rule(
        dose_ug=st.sampled_from([1, 5, 20, 50, 100, 101]),
        duration=st.sampled_from([0, 1000, MIN, HOUR]),
    )
    def bolus(self, dose_ug, duration):
        self.two_phase("bolus", {"dose_ng": dose_ug * 1000, "duration_ms": duration})

    @rule(go=st.integers(0, 2))
    def patient_bolus(self, go):
        if go == 0:
            self.single("patient_bolus", role="patient")

    @rule(reason=st.sampled_from(["procedure", "mri", "other"]), go=st.integers(0, 2))
    def stop(self, reason, go):
        if go == 0:  # less often, so more of each run is therapy
            self.two_phase("stop", {"reason": reason})

    @rule(go=st.integers(0, 4))
    def emergency_stop(self, go):
        if go == 0:  # rarely: it ends every other rule's chance to run therapy
            self.single("emergency_stop")

    @rule(rate=st.sampled_from([10_000, 20_000, 50_000]), go=st.integers(0, 2))
    def min_rate(self, rate, go):
        if go == 0:
            self.two_phase("min_rate", {"rate_nl_per_day": rate})

    @rule(factor=st.sampled_from([0, 0, 500, 750, 1000, 1001]), check=st.booleans())
    def resume(self, factor, check):
        if check:
            self.single("post_scan_check")
        self.two_phase("resume", {"daily_dose_ng": self.dose_like(factor) if factor else 0})

    @rule(
        conc=CONCS,
        aspirate_ml=st.sampled_from([0, 1, 5, 19]),
        volume_ml=st.sampled_from([0, 5, 20, 21]),
        partial=st.booleans(),
    )
    def refill(self, conc, aspirate_ml, volume_ml, partial):
        self.two_phase(
            "refill",
            {
                "aspirated_nl": aspirate_ml * 1_000_000,
                "volume_nl": volume_ml * 1_000_000,
                "concentration_ug_per_ml": conc,
                "partial": int(partial),
            },
        )

    @rule(contents=st.sampled_from(["drug", "saline", "empty"]))
    def prime(self, contents):
        self.two_phase("prime", {"contents": contents})

    @rule(dose_ug=st.sampled_from([1, 50, 500]))
    def port_injection(self, dose_ug):
        self.two_phase("port_injection", {"dose_ng": dose_ug * 1000})

    @rule(code=st.sampled_from(["all", "CAP_HOLD", "MOTOR_STALL", "NOPE"]))
    def acknowledge(self, code):
        self.single("acknowledge", {"code": code})

    @rule(offset=st.sampled_from([-300, 0, 60, 840, 841]))
    def set_clock_offset(self, offset):
        self.two_phase("set_clock_offset", {"utc_offset_min": offset})

    @rule(
        name=st.sampled_from(["maintenance", "bogus", "program"]),
        role=st.sampled_from(["service", "patient", "clinician", "root"]),
    )
    def odd_command(self, name, role):
        self.single(name, {"daily_dose_ng": 1.5} if name == "program" else {}, role=role)

    @rule(mode=OUTCOMES, count=st.integers(1, 40))
    def motor_fault(self, mode, count):
        self.board.mode = mode
        self.board.count = count

    @rule(valid=st.booleans(), shift=st.sampled_from([0, -23 * HOUR, HOUR, 12 * HOUR]))
    def rtc(self, valid, shift):
        if self.r.powered:
            self.r.set_rtc(self.t, 1_800_000_000_000 + self.t + shift if valid else None)

    @rule(on=st.booleans())
    def empty_switch(self, on):
        if self.r.powered:
            self.r.empty_switch(self.t, on)

    @rule(go=st.integers(0, 2))
    def session_end(self, go):
        if go == 0 and self.r.powered:
            self.r.session_end(self.t)

    @rule(
        lower=st.sampled_from([0, MIN, 4 * HOUR, 4 * HOUR + 1, DAY, 3 * DAY]),
        extra=st.sampled_from([0, 0, HOUR, None]),
        boot_loop=st.sampled_from([0, 0, 0, 1]),
        mid_stroke=st.booleans(),
    )
    def power_cut(self, lower, extra, boot_loop, mid_stroke):
        if not self.r.powered:
            return
        if mid_stroke:
            self.board.mode = "power_cut"
            self.board.count = 1
            nxt = self.r.next_wake()
            if nxt >= 0:
                self.t = max(self.t, nxt)
            self.r.advance(self.t)
            self.board.count = 0
        if self.r.powered:
            self.r.power_cut(self.t)
            self.r.journal.sync()  # cut after the last write (losing unsynced
            # records is the littlefs sweep's subject: test_store_powercut.py)
        self.fs.power_cut()
        live = _state(self.ctrl)
        self.t += lower
        store = durable.Store(self.fs)
        runner, info, _storage = store.rebuild(self.board)
        # SR-25/SR-26: storage holds exactly the controller that lost power
        got = _state(runner.ctrl)
        assert got == live, [(k, live[k], got.get(k)) for k in live if live[k] != got.get(k)]
        assert not info.damaged and not info.problems, vars(info)
        self.r, info = durable.Store(self.fs).recover(
            self.board, self._trace, None, boot_loop,
            clock=(self.t, None if extra is None else lower + extra))
        self.ctrl = self.r.ctrl
        self.recoveries += 1

    # ------------------------------------------------------------------ invariants
    def _violations(self, *rules):
        return [str(v) for v in self.model.violations if v.rule in rules]

    @invariant()
    def caps_hold(self):
        """1. No 24 h or 1 h half-open window exceeds its cap at any stroke, counting
        every commanded stroke (stalled or unknown included) at the highest
        concentration within the interface band (SR-3, SR-4, SR-5, SR-21)."""
        assert not self._violations("SR-4", "SR-5"), self._violations("SR-4", "SR-5")
        st_ = self._status()
        sums = st_["window_ng"]
        t = st_["t"]
        assert sums == [self.model.window_sum(t, DAY), self.model.window_sum(t, HOUR)], sums

    @invariant()
    def basal_changes_obey_titration_rules(self):
        """2. Every basal change obeys the up-cap against the lowest dose in 24 h
        (SR-8), the down-cap against the highest settled dose after the last
        interruption (SR-9), the start and restart rules and their no-increase
        windows (SR-10, SR-11)."""
        v = self._violations("SR-8", "SR-9", "SR-10", "SR-11", "SR-10/SR-11")
        assert not v, v

    @invariant()
    def delivery_tracks_programme(self):
        """3. While running unobstructed with drug, delivered volume stays within one
        stroke of the daily dose converted at the tip concentration (SR-21), and
        nothing missed is caught up (SR-12)."""
        v = self._violations("SR-12", "SR-21")
        assert not v, v

    @invariant()
    def reservoir_rules(self):
        """4. Reservoir bounds and alarms follow SR-19 (LOW_RESERVOIR at R_p <= 4 mL,
        RESERVOIR_EMPTY_SOON at R_p <= 0), and basal is never stopped on a computed
        remainder while R_o > 0 and the switch has not tripped (tracking above)."""
        assert not self._violations("SR-19"), self._violations("SR-19")
        st_ = self._status()
        r, rp, ro = self.model.reservoir()
        assert (st_["reservoir_nl"], st_["reservoir_pess_nl"], st_["reservoir_opt_nl"]) == (
            r,
            rp,
            ro,
        )

    @invariant()
    def refusals_change_nothing(self):
        """5. A refused command changes no therapy state, writes exactly one audit
        record and carries a reason code (SR-14); no internal error ever."""
        assert not self.internal, self.internal
        for unchanged, records, reason, cmd in self.refusals:
            assert unchanged, ("refusal changed state", reason, cmd)
            assert records == 1, ("audit records", records, cmd)
            assert reason, cmd
        self.refusals = []
        assert not self._violations("SR-14")

    @invariant()
    def mass_is_conserved(self):
        """6. Drug mass is conserved through the fluid path (SR-21, SR-22): filled =
        delivered + in the dead volume + in the reservoir + aspirated, and each term
        matches the controller's own bookkeeping."""
        filled, delivered, path, res, asp = self.model.conservation_terms()
        assert filled == delivered + path + res + asp
        c = self.ctrl
        ctrl_res = c.res.remaining_nl() * c.res.concentration
        assert (c.filled_pg, c.delivered_pg, c.path.mass_pg(), ctrl_res, c.aspirated_pg) == (
            filled,
            delivered,
            path,
            res,
            asp,
        )

    @invariant()
    def no_stroke_when_stopped(self):
        """7. No stroke is issued in STOPPED, EMERGENCY_STOPPED, SAFE or MAINTENANCE;
        MIN_RATE delivers only minimum-rate strokes (SR-16, SR-17, SR-18, SR-27)."""
        v = self._violations("SR-16/17/27", "SR-23")
        assert not v, v
