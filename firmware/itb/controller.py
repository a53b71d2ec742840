"""The ITB controller state machine (SAFETY_RULES.md "States"), sans-IO.

Theory of operation
-------------------
Time, commands and hardware events go in; stroke intents, results and alarm
events come out. Nothing here reads a clock or touches hardware: every entry point
takes ``now``, the therapy clock in ms, which never goes backwards (SR-23).

- ``handle(command, now) -> result`` applies or refuses one command. Every call
  writes exactly one audit record. A refused command changes no therapy state and
  its result carries a reason code, a message and, where one exists, the allowed
  value or an offered plan (SR-14). Two-phase commands go through ``prepare``
  (returns the effect and a hash) and ``confirm(hash)`` within 60 s (SR-15).
- ``wake(now) -> actions`` does what is due at ``now``: plan steps, flex
  boundaries, alarm annunciations and at most one stroke intent. The stroke's mass
  is counted for the caps when it is decided (SR-4, SR-26), before the motor moves.
- ``complete(n, outcome, now)`` records the outcome of stroke ``n``:
  ``ok``, ``stall``, ``occlusion`` or ``unknown`` (SR-4, SR-12, SR-26).
- ``next_wake() -> t`` is when ``wake`` must next be called (-1: nothing due).

Acceptance of anything that changes future delivery runs the change on a copy of
the controller 24 h ahead (and over a plan's whole length) and checks every window
position against the caps (SR-6). The same stroke-deciding code runs in the
projection and in real delivery, so the two cannot disagree.

States and the commands each accepts are the table ``ACCEPTS`` below; a command
sent in another state is refused with ``WRONG_STATE`` naming state and command.
"""

import binascii

from itb import alarms as al
from itb import commands as cmds
from itb import therapy
from itb.drugs import (
    PUMP_CONCENTRATIONS_UG_PER_ML, SCREENING_CONCENTRATION_UG_PER_ML, DeviceConfig,
    is_pump_concentration,
)
from itb.fluidpath import FluidPath
from itb.ledger import MemoryStore
from itb.limits import (
    INTERRUPTED, RUNNING as SEG_RUNNING, BasalHistory, WindowLog, WINDOWS_MS, default_caps,
    down_cap_min, down_cap_ok, restart_pct, start_limit_ng, up_cap_max, up_cap_ok,
)
from itb.reservoir import Reservoir, ml_text
from itb.scheduler import Accumulator, Overlay
from itb.trace import encode
from itb.units import DAY_MS, HOUR_MS, MINUTE_MS, ceil_div, mass_ng_up, volume_nl_up

TYPE_CHECKING = False  # MicroPython has no typing; guards checker-only lines

UNPROGRAMMED = "UNPROGRAMMED"
RUNNING = "RUNNING"
STOPPED = "STOPPED"
EMERGENCY_STOPPED = "EMERGENCY_STOPPED"
MIN_RATE = "MIN_RATE"
SAFE = "SAFE"
MAINTENANCE = "MAINTENANCE"
STATES = (UNPROGRAMMED, RUNNING, STOPPED, EMERGENCY_STOPPED, MIN_RATE, SAFE, MAINTENANCE)
NO_STROKE_STATES = (UNPROGRAMMED, STOPPED, EMERGENCY_STOPPED, SAFE, MAINTENANCE)

_ALL = STATES
_THERAPY = (UNPROGRAMMED, RUNNING, STOPPED, EMERGENCY_STOPPED, MIN_RATE, SAFE)
# command -> states in which it is accepted (transitions are in the handlers)
ACCEPTS = {
    "program": (UNPROGRAMMED, SAFE),
    "set_daily_dose": (RUNNING,),
    "flex": (RUNNING,),
    "titrate": (RUNNING,),
    "taper": (RUNNING,),
    "bolus": (RUNNING,),
    "patient_bolus": (RUNNING,),
    "stop": (RUNNING, MIN_RATE, SAFE),
    "emergency_stop": _ALL,
    "min_rate": (RUNNING, STOPPED),
    "resume": (STOPPED, EMERGENCY_STOPPED, MIN_RATE, SAFE),
    "post_scan_check": (STOPPED,),
    "refill": _THERAPY,
    "prime": (UNPROGRAMMED,),
    "port_injection": _THERAPY,
    "acknowledge": _ALL,
    "set_clock_offset": _THERAPY,
    "maintenance": (UNPROGRAMMED, STOPPED, EMERGENCY_STOPPED, SAFE),
    # bench calibration: only a pump that treats no one moves for a balance
    "calibration_run": (UNPROGRAMMED,),
    "set_calibration": (UNPROGRAMMED,),
    "prepare": _ALL,
    "confirm": _ALL,
}

OUTCOMES = ("ok", "stall", "occlusion", "unknown")
NG_DAY = "ng_per_day"
SEEN_IDS = 256  # SR-26: results of the last 256 command ids are kept
FULL_RESULTS = 4  # ... the newest 4 whole; older ones without their effect (heap)
KEPT_FIELDS = ("ok", "reason", "message", "id", "name", "command", "hash", "allowed",
               "allowed_unit", "command_crc")
ID_MAX = 0x7FFFFFFF
ID_STEP_MAX = 65536  # SR-26: how far above the highest id so far a new one may be
HEARTBEAT_MS = 15 * MINUTE_MS  # SR-23
MAX_T = 1 << 47  # therapy clock range, ms (about 4400 years)
FAULT_GAP_MIN_MS = HOUR_MS  # "Interruption": trailing max(1 h, two stroke intervals)


class Refusal(Exception):
    """A rule refuses a command: reason code, message, allowed value, extras."""

    def __init__(self, reason, message, allowed=None, extra=None, unit=None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.allowed = allowed
        self.extra = extra
        self.unit = unit  # of ``allowed``: ng_per_day, ng, nl, nl_per_day or ms


class ClockError(ValueError):
    """The caller passed a ``now`` earlier than the last one (SR-23)."""


class Controller:
    """The controller. ``config``: dict of ``DeviceConfig`` overrides (or a
    ``DeviceConfig``); ``store``: its audit record sink with ``append(record)``
    (default ``ledger.MemoryStore``, a ring in memory; the durable state is kept
    by ``itb.store``, which journals the runner's records instead)."""

    def __init__(self, config=None, store=None):
        self.cfg = config if isinstance(config, DeviceConfig) else DeviceConfig(config)
        cfg = self.cfg
        self.store = store if store is not None else MemoryStore()
        self.state = UNPROGRAMMED
        self.rx = None  # prescription: origin, caps, patient bolus, start rule
        self.program = None  # basal steps (therapy.py)
        self.plan = None  # [kind, doses, index, next_ms, every_ms]
        self.acc = Accumulator(cfg.stroke_nl, cfg.volume_scale)
        self.overlays = []
        self.path = FluidPath(cfg.dead_volume_nl, 0)
        self.res = Reservoir(cfg.volume_accuracy_permille)
        self.window = WindowLog()
        self.history = BasalHistory()
        self.alarms = al.Alarms(cfg.realarm_ms)
        self.last_now = 0
        self.stroke_seq = 0
        self.pending = None  # [n, source, volume_nl, t]
        self.last_stroke_ms = -1
        self.hold_until = -1  # SR-7: strokes withheld until this time
        self.no_increase_until = -1  # SR-10 / SR-11
        self.interrupt_ms = -1  # start of the current state interruption
        self.outage_slack_ms = 0  # upper - lower bound of outages inside it (-1: unknown)
        self.fault = None  # "stall", "occlusion", "empty"
        self.last_good_ms = -1
        self.fault_marked = 0
        self.stop_reason = None
        self.mri_checked = 0
        self.min_rate_nl = 0
        self.pb_times = []
        self.utc_offset_min = 0
        self.wall_delta = None  # utc_ms - therapy_ms; None: local time unknown (SR-24)
        self.pre_maintenance = None
        self.heartbeat_ms = 0
        # SR-21 conservation bookkeeping (pg)
        self.filled_pg = 0
        self.delivered_pg = 0
        self.aspirated_pg = 0
        self.rx_gen = 0  # SR-25: generation of the accepted prescription (ledger "rx")
        # volatile (lost at a reset)
        self.session_until = -1
        self.prepared = None  # [hash, name, args, t, role]
        self.prepare_seq = 0
        # the bench measurement under way (itb/calibration.py): [strokes ok, strokes not
        # ok, the id the host gave it, 0 for none]
        self.calibration = [0, 0, 0]
        self.seen = {}
        self.seen_order = []
        self.id_floor = 0  # ids at or below this and not remembered are refused
        self.projecting = 0
        self._pending_events = []

    # ------------------------------------------------------------------ copies
    def _clone(self):
        c = Controller(self.cfg, _NullStore())
        for name in ("state", "rx", "program", "last_now", "stroke_seq", "last_stroke_ms",
                     "hold_until", "no_increase_until", "interrupt_ms", "outage_slack_ms",
                     "fault", "last_good_ms", "fault_marked", "stop_reason", "mri_checked",
                     "min_rate_nl", "utc_offset_min", "wall_delta", "filled_pg",
                     "delivered_pg", "aspirated_pg", "pre_maintenance", "rx_gen"):
            setattr(c, name, getattr(self, name))
        c.plan = None if self.plan is None else [self.plan[0], list(self.plan[1])] + self.plan[2:]
        c.program = None if self.program is None else [list(s) for s in self.program]
        c.acc = self.acc.copy()
        c.overlays = [o.copy() for o in self.overlays]
        c.path = self.path.copy()
        c.res = self.res.copy()
        c.window = self.window.copy()
        c.history = self.history.copy()
        c.alarms = self.alarms.copy()
        c.pb_times = list(self.pb_times)
        c.pending = None if self.pending is None else list(self.pending)
        return c

    def therapy_state(self):
        """Everything that is therapy state, as plain data (no audit log, no
        volatile session data): used to show that a refusal changed nothing."""
        return {
            "state": self.state, "rx": self.rx, "program": self.program, "plan": self.plan,
            "acc": [self.acc.owed, self.acc.t, self.acc.inc],
            "overlays": [[o.source, o.next_ms, o.remaining, o.interval_ms] for o in self.overlays],
            "path": [self.path.segs, self.path.passed],
            "res": [self.res.concentration, self.res.fill_nl, self.res.delivered_nl, self.res.switch],
            "window": [self.window.t[self.window.head[0]:], self.window.m[self.window.head[0]:]],
            "history": self.history.segs, "alarms": self.alarms.listing(),
            "misc": [self.hold_until, self.no_increase_until, self.interrupt_ms, self.fault,
                     self.stop_reason, self.mri_checked, self.min_rate_nl, self.pb_times,
                     self.utc_offset_min, self.wall_delta, self.filled_pg, self.delivered_pg,
                     self.aspirated_pg, self.stroke_seq, self.rx_gen],
        }

    # ------------------------------------------------------------------ derived
    def daily_dose_ng(self):
        """Basal daily dose of the program in effect (ng/day), 0 if none."""
        return therapy.daily_dose_up(self.program) if self.program else 0

    def _local_min(self, now):
        if self.wall_delta is None:
            return None
        local_ms = now + self.wall_delta + self.utc_offset_min * MINUTE_MS
        return (local_ms // MINUTE_MS) % 1440

    def _conc_hi(self):
        hi = self.res.concentration
        for _v, c in self.path.segs:
            if c > hi:
                hi = c
        return hi

    def stroke_mass_hi_ng(self):
        """Mass of one stroke at the highest concentration in path or reservoir."""
        return mass_ng_up(self.cfg.stroke_nl, self._conc_hi())

    def _check_stroke_fits(self):
        """SR-3: one stroke at the highest concentration in path or reservoir fits
        both caps; else Refusal STROKE_TOO_LARGE."""
        sm = self.stroke_mass_hi_ng()
        caps = self.caps()
        if sm > caps[0] or sm > caps[1]:
            raise Refusal("STROKE_TOO_LARGE", "one stroke (%d ng at %d ug/mL) does not fit the"
                          " caps %d / %d ng (SR-3)" % (sm, self._conc_hi(), caps[0], caps[1]))

    def caps(self):
        """SR-3 caps in effect ``[cap_24h_ng, cap_1h_ng]`` (prescription or defaults).

        Reading of SR-3 (recorded in the resolution note): the default caps are
        computed from the highest basal daily dose in effect in the trailing 24 h,
        not only the current one. A reduction (an automatic SR-11 restart, a taper)
        must not shrink the cap below mass accepted under the previous dose and so
        hold basal (precedence rule 2); the cap still never exceeds 2 x that dose +
        the maximum bolus, bounded by the hard maximum."""
        cfg = self.cfg
        d = self.daily_dose_ng()
        peak = therapy.peak_rate(self.program) if self.program else 0
        if self.state == MIN_RATE:
            conc = self.path.tip_concentration(self.res.concentration)
            d = mass_ng_up(self.min_rate_nl, conc)
            peak = d
        recent = self.history.highest_dose(self.last_now)
        if recent is not None:
            if recent > d:
                d = recent
            if recent > peak:
                peak = recent
        caps = default_caps(d, peak, self.stroke_mass_hi_ng(), cfg.max_bolus_ng,
                            cfg.max_daily_dose_ng)
        if self.rx is not None:
            if self.rx["cap_24h_ng"]:
                caps[0] = self.rx["cap_24h_ng"]
            if self.rx["cap_1h_ng"]:
                caps[1] = self.rx["cap_1h_ng"]
        return caps

    def planned_nl_per_day(self):
        """SR-19 planned daily volume: basal (at the reservoir concentration) plus the
        maximum patient boluses when enabled, at nominal stroke volume."""
        c = self.res.concentration
        if c <= 0:
            return 0
        if self.state == MIN_RATE:
            return self.min_rate_nl
        if self.state != RUNNING or not self.program:
            return 0
        v = volume_nl_up(self.daily_dose_ng(), c)
        if self.rx and self.rx["patient_bolus_ng"]:
            v += self.rx["patient_max_per_24h"] * volume_nl_up(self.rx["patient_bolus_ng"], c)
        return v

    def _basal_inc(self, now):
        if self.fault == "empty":
            return 0
        p = self.program
        if self.state == RUNNING and p:
            # a continuous program (one step, from 00:00) does not depend on local time
            rate = p[0][1] if len(p) == 1 else therapy.rate_at(p, self._local_min(now))
            return self.acc.inc_for_dose(rate, self.path.tip_concentration(self.res.concentration))
        if self.state == MIN_RATE:
            return self.acc.inc_for_volume(self.min_rate_nl)
        return 0

    def _refresh_rate(self, now):
        inc = self._basal_inc(now)
        if inc != self.acc.inc:
            self.acc.set_rate(now, inc)

    def _min_gap_due(self, t):
        if self.last_stroke_ms >= 0:
            g = self.last_stroke_ms + self.cfg.min_stroke_interval_ms
            if t < g:
                t = g
        if self.hold_until > t:
            t = self.hold_until
        return t

    def _basal_due(self):
        if self.state not in (RUNNING, MIN_RATE) or self.pending is not None \
                or self.fault == "empty":
            return -1
        t = self.acc.due_at()
        return -1 if t < 0 else self._min_gap_due(t)

    def _overlay_due(self):
        if not self.overlays or self.pending is not None:
            return -1
        return self._min_gap_due(self.overlays[0].next_ms)

    def _flex_boundary(self, now):
        if self.state != RUNNING or not self.program or len(self.program) == 1:
            return -1
        local = self._local_min(now)
        if local is None:
            return -1
        local_ms = now + self.wall_delta + self.utc_offset_min * MINUTE_MS
        into = local_ms % MINUTE_MS
        return now - into + therapy.next_boundary_min(self.program, local) * MINUTE_MS

    def _fault_gap_ms(self):
        # SR terms "Interruption": trailing max(1 h, two stroke intervals)
        if self.acc.inc <= 0:
            return FAULT_GAP_MIN_MS
        two = 2 * ceil_div(self.acc.thr, self.acc.inc)
        return two if two > FAULT_GAP_MIN_MS else FAULT_GAP_MIN_MS

    def next_wake(self):
        """Therapy time (ms) at which ``wake`` must next be called; -1 if never."""
        # the earliest of the candidates >= 0 (a flat chain: asked after every wake-up)
        best = self._basal_due()
        t = self._overlay_due()
        if t >= 0 and (best < 0 or t < best):
            best = t
        t = self.alarms.next_due()
        if t >= 0 and (best < 0 or t < best):
            best = t
        if self.plan is not None and self.state == RUNNING:
            t = self.plan[3]
            if best < 0 or t < best:
                best = t
        t = self._flex_boundary(self.last_now)
        if t >= 0 and (best < 0 or t < best):
            best = t
        if self.state == STOPPED and self.session_until >= 0:
            t = self.session_until
            if best < 0 or t < best:
                best = t
        if self.fault in ("stall", "occlusion") and not self.fault_marked and self.last_good_ms >= 0:
            t = self.last_good_ms + self._fault_gap_ms()
            if best < 0 or t < best:
                best = t
        if not self.projecting:
            t = self.heartbeat_ms + HEARTBEAT_MS
            if best < 0 or t < best:
                best = t
        if best >= 0 and best < self.last_now:
            best = self.last_now
        return best

    # ------------------------------------------------------------------ time
    def _check_time(self, now):
        if type(now) is not int or now < 0 or now > MAX_T:
            raise ClockError("now must be a non-negative integer (ms)")
        if now < self.last_now:
            raise ClockError("now=%d is earlier than the last time %d (SR-23)" % (now, self.last_now))

    def _update(self, now, events):
        """Apply what time alone makes due at ``now`` (plan steps, flex boundaries,
        session end, fault interruption marking, re-annunciation)."""
        self.last_now = now
        if not self.projecting and now >= self.heartbeat_ms + HEARTBEAT_MS:
            # SR-23: a heartbeat every 15 min bounds the start of an outage
            self.heartbeat_ms = now
            self.store.append({"k": "heartbeat", "t": now})
        if self.state == RUNNING and self.plan is not None:
            while self.plan is not None and self.plan[3] <= now:
                self._plan_step(now, events)
        if self.state == STOPPED and 0 <= self.session_until <= now:
            self.session_until = -1
            self._alarm("PUMP_STOPPED", 1, now, events)  # SR-17
        if (self.fault in ("stall", "occlusion") and not self.fault_marked
                and self.last_good_ms >= 0 and now >= self.last_good_ms + self._fault_gap_ms()):
            self.fault_marked = 1
            self.history.record(now, 0, INTERRUPTED)
        self._refresh_rate(now)
        if not self.projecting:
            for code in self.alarms.due(now):
                events.append({"k": "alarm", "code": code, "ev": "repeat",
                               "pri": al.PRIORITY_NAMES[al.CODES[code][0]]})

    def _alarm(self, code, active, now, events=None):
        if self.projecting:
            return
        change = self.alarms.set(code, active, now)
        if change:
            ev = {"k": "alarm", "code": code, "ev": "raise" if change > 0 else "clear",
                  "pri": al.PRIORITY_NAMES[al.CODES[code][0]]}
            (events if events is not None else self._pending_events).append(ev)

    def _pulse(self, code, now):
        """A one-shot event alarm: raised, condition over at once, stays latched."""
        self._alarm(code, 1, now)
        if not self.projecting:  # pragma: no branch - defensive: projections never pulse
            self.alarms.set(code, 0, now)

    def drain_events(self):
        """Alarm events raised inside commands and completions since the last call."""
        ev = self._pending_events
        self._pending_events = []
        return ev

    def _reservoir_alarms(self, now):
        low, soon = self.res.levels(self.planned_nl_per_day(), self.cfg.low_reservoir_nl,
                                    self.cfg.low_reservoir_days)
        if self.res.concentration <= 0:
            low = soon = False
        self._alarm("LOW_RESERVOIR", low, now)
        self._alarm("RESERVOIR_EMPTY_SOON", soon, now)
        empty = not self.res.can_deliver() and self.res.concentration > 0
        self._alarm("RESERVOIR_EMPTY", empty, now)
        if empty and self.fault != "empty" and self.state in (RUNNING, MIN_RATE):
            self._fault_start("empty", now)
        elif not empty and self.fault == "empty":
            self._fault_end(now)

    # ------------------------------------------------------------------ strokes
    def wake(self, now):
        """Do what is due at ``now``. Returns a list of actions: alarm events
        ``{"k": "alarm", ...}`` and at most one stroke intent ``{"k": "stroke", "n",
        "src", "nl", "ng_hi", "ng_lo"}`` (volume in nL, masses in ng). A stroke must
        be completed (``complete``) before the next ``wake``. Raises ClockError on a
        ``now`` earlier than the last (SR-23)."""
        self._check_time(now)
        events = self.drain_events()
        self._update(now, events)
        if self.pending is not None:
            raise ValueError("stroke %d is not complete" % self.pending[0])
        s = self._decide(now, events)
        if s is not None:
            events.append(s)
        return events

    def tick(self, now):
        """Let time pass to ``now`` without deciding a stroke (the caller has run
        every wake-up due before it). Returns alarm events."""
        self._check_time(now)
        events = self.drain_events()
        self._update(now, events)
        return events

    def _decide(self, now, events):
        if self.state in NO_STROKE_STATES and self.state != UNPROGRAMMED:
            return None
        tb = self._basal_due()
        to = self._overlay_due()
        src = None
        if 0 <= tb <= now and (to < 0 or tb <= to):
            src = "basal" if self.state == RUNNING else "min_rate"
        elif 0 <= to <= now:
            src = self.overlays[0].source
        if src is None:
            return None
        if not self.res.can_deliver():
            # SR-19 measured or optimistic empty: nothing can move; a bolus or priming
            # in progress is dropped (never made up, SR-12)
            self._reservoir_alarms(now)
            self.overlays = []
            self.acc.hold(now)
            return None
        vol = self.cfg.stroke_nl
        _pg, hi, lo = self.path.peek(vol, self.res.concentration)
        m_hi = mass_ng_up(vol, hi)
        m_lo = vol * lo // 1000
        if not self.projecting:
            caps = self.caps()
            sums = self.window.sums(now)
            if sums[0] + m_hi > caps[0] or sums[1] + m_hi > caps[1]:
                # SR-5 hard caps, SR-7 CAP_HOLD until the window allows
                self.hold_until = self._release_time(now, m_hi, caps)
                if src in ("basal", "min_rate"):
                    self.acc.hold(now)
                else:
                    self.overlays[0].next_ms = self.hold_until
                self._alarm("CAP_HOLD", 1, now, events)
                return None
            self.hold_until = -1
            self._alarm("CAP_HOLD", 0, now, events)
        if src in ("basal", "min_rate"):
            self.acc.take(now)
        else:
            o = self.overlays[0]
            o.take()
            if o.remaining <= 0:
                self.overlays.pop(0)
        self.window.add(now, m_hi)  # SR-4: counted when commanded
        self.stroke_seq += 1
        self.last_stroke_ms = now
        self.pending = [self.stroke_seq, src, vol, now]
        if not self.projecting:
            rec = {"k": "intent", "t": now, "n": self.stroke_seq, "src": src, "nl": vol,
                   "ng_hi": m_hi}
            self.store.append(rec)  # SR-26: durable before the motor moves
        return {"k": "stroke", "n": self.stroke_seq, "src": src, "nl": vol, "ng_hi": m_hi,
                "ng_lo": m_lo}

    def _release_time(self, now, m, caps):
        rel = now + 1
        for i in (0, 1):
            w = WINDOWS_MS[i]
            evs = self.window.events(now - w)
            total = 0
            for _t, mm in evs:
                total += mm
            if total + m <= caps[i]:
                continue
            for t, mm in evs:
                total -= mm
                if total + m <= caps[i]:
                    if t + w > rel:
                        rel = t + w
                    break
            else:  # pragma: no cover - defensive: program and refill refuse a stroke over a cap
                if now + w > rel:
                    rel = now + w
        return rel

    def complete(self, n, outcome, now):
        """Record the outcome of stroke ``n``: ``ok`` (delivered), ``stall`` or
        ``occlusion`` (not delivered, still counted, HIGH alarm, not made up:
        SR-4, SR-12), ``unknown`` (counted and assumed delivered for the reservoir,
        flagged for reconciliation, SR-26). Returns alarm events."""
        self._check_time(now)
        if self.pending is None or self.pending[0] != n:
            raise ValueError("no pending stroke %r" % (n,))
        if outcome not in OUTCOMES:
            raise ValueError("outcome must be one of " + ", ".join(OUTCOMES))
        self.last_now = now
        vol = self.pending[2]
        if self.pending[1] == "calibration":
            self.calibration[0 if outcome == "ok" else 1] += 1  # itb/calibration.py
        self.pending = None
        if not self.projecting:
            self.store.append({"k": "done", "t": now, "n": n, "res": outcome})
        if outcome in ("ok", "unknown"):
            pg, _hi, _lo = self.path.push(vol, self.res.concentration)
            self.delivered_pg += pg
            self.res.delivered_nl += vol
            if outcome == "unknown":
                self._pulse("STROKE_UNCONFIRMED", now)
            if self.fault in ("stall", "occlusion"):
                self._fault_end(now)
            self.last_good_ms = now
            self._alarm("MOTOR_STALL", 0, now)
            self._alarm("OCCLUSION", 0, now)
        else:
            self._alarm("MOTOR_STALL" if outcome == "stall" else "OCCLUSION", 1, now)
            if self.fault is None:
                self._fault_start(outcome, now)
        self._refresh_rate(now)
        if not self.projecting:
            self._reservoir_alarms(now)
        return self.drain_events()

    def _fault_start(self, kind, now):
        self.fault = kind
        self.fault_marked = 0
        if self.last_good_ms < 0:
            self.last_good_ms = now
        if kind == "empty":
            self.fault_marked = 1
            self.history.record(now, 0, INTERRUPTED)
            self.last_good_ms = now
        self._refresh_rate(now)

    def _fault_end(self, now):
        """Delivery works again after a fault (stall, occlusion, empty reservoir)."""
        kind = self.fault
        self.fault = None
        gap = now - self.last_good_ms if self.last_good_ms >= 0 else 0
        if self.fault_marked or kind == "empty":
            self.fault_marked = 0
            if self.state == RUNNING and self.program:
                since = self.last_good_ms if self.last_good_ms >= 0 else now
                if restart_pct(gap) < 100:
                    # SR-11: the first basal after an interruption > 4 h is capped
                    base = self.history.last_settled_before(since, self.cfg.settle_ms)
                    dose = self._restart_dose(base, gap)
                    if dose < self.daily_dose_ng():
                        self.program = therapy.continuous(dose)
                        self.plan = None
                        self.no_increase_until = now + DAY_MS
                        self._alarm("RESTART_REDUCED", 1, now)
                self.history.record(now, self.daily_dose_ng(), SEG_RUNNING)
            elif self.state == MIN_RATE:
                pass
        self.acc.reset(now)
        self._refresh_rate(now)

    def _restart_dose(self, base, outage_upper):
        """SR-11 restart cap (ng/day) from the last settled dose ``base``; with no
        settled dose before the interruption the current dose is the base."""
        if base is None:  # pragma: no cover - defensive: program records its dose first
            base = self.daily_dose_ng()
        pct = restart_pct(outage_upper)
        v = base * pct // 100
        return v - v % 100

    # ------------------------------------------------------------------ inputs
    def empty_switch(self, now, tripped):
        """The syringe-empty switch changed (SR-19's measured empty)."""
        self._check_time(now)
        self.last_now = now
        self.res.switch = 1 if tripped else 0
        self._reservoir_alarms(now)
        return self.drain_events()

    def battery(self, now, low):
        """The board's battery monitor changed: ``low`` true while the battery is
        below the board's threshold (the board applies the hysteresis). MEDIUM
        ``BATTERY_LOW`` (IEC 60601-2-24 low-battery alarm; SR-28 priorities)."""
        self._check_time(now)
        self.last_now = now
        self._alarm("BATTERY_LOW", 1 if low else 0, now)
        return self.drain_events()

    def set_wall_clock(self, now, utc_ms):
        """The RTC says UTC is ``utc_ms`` at therapy time ``now``; ``None`` if the RTC
        is invalid (SR-23 CLOCK_INVALID; flex falls back to its average, SR-24).
        Wall-clock changes never move the therapy clock or the windows."""
        self._check_time(now)
        self.last_now = now
        self.wall_delta = None if utc_ms is None else utc_ms - now
        self._alarm("CLOCK_INVALID", utc_ms is None, now)
        self._refresh_rate(now)
        return self.drain_events()

    def session_end(self, now):
        """The programming session ended (link closed or timed out): SR-17."""
        self._check_time(now)
        self.last_now = now
        self.session_until = -1
        if self.state == STOPPED:
            self._alarm("PUMP_STOPPED", 1, now)
        return self.drain_events()

    def reboot(self, now, outage_upper_ms, boot_loop=0, storage=None):
        """Restart after a reset or power loss. ``now`` is the last therapy time plus
        the outage's lower bound (0 if the RTC is invalid); ``outage_upper_ms`` its
        upper bound, ``None`` if unknown (SR-23). A stroke without completion counts
        as delivered and is flagged (SR-26). RUNNING resumes by itself under SR-11
        (unknown outage: 50 % with HIGH RESTART_REDUCED); ``boot_loop`` enters SAFE
        (SR-27). Volatile state (prepared commands, session) is lost.

        ``storage`` (from boot recovery, ``store.py``; SR-25): None when storage was
        sound; ``{"kind": "rollback", "gen", "ng_day", "conc"}`` when the ledger
        records a newer prescription generation than could be recovered: HIGH
        PRESCRIPTION_ROLLBACK, basal at the ledger's daily dose for that generation
        with plans suspended, until a clinician programs again. If that generation
        filled a different concentration, the recovered reservoir and catheter
        contents are not known: the safer reading is to stop with HIGH
        STORAGE_CORRUPT (a stroke mass cannot be bounded). ``{"kind": "corrupt"}``:
        no checkpoint was readable. With ``"ng_day"`` and ``"conc"`` (the ledger
        shows recent basal delivery at that daily dose and concentration) basal
        continues at that observed rate under HIGH STORAGE_CORRUPT: the reservoir
        is taken as full (its measured empty is the switch, SR-19), the catheter as
        full of that drug, the origin as the one with the smallest up-cap, default
        caps, patient boluses off. Without them nothing is known: no drug is
        delivered and HIGH STORAGE_CORRUPT is raised (never a silent default)."""
        self._check_time(now)
        start = self.last_now
        self.prepared = None
        self.session_until = -1
        if self.pending is not None:
            self.complete(self.pending[0], "unknown", start)
        self.calibration = [0, 0, 0]  # a reset ends a measurement: weigh a new run
        lower = now - start
        upper = outage_upper_ms
        gap = self._fault_gap_ms()
        if upper is not None and upper < lower:
            upper = lower
        self.last_now = now
        if upper is not None and upper < gap:
            # not an interruption: what was owed before the reset is kept, accrued
            # over the outage's lower bound and held at one stroke (SR-12). Dropping
            # it would let resets that come faster than the stroke interval stop
            # basal without any alarm.
            self.acc.hold(now)
        else:
            self.acc.reset(now)
        self.overlays = []  # a bolus interrupted by a reset is not resumed
        self.hold_until = -1
        if self.state == MAINTENANCE:
            self.state = self.pre_maintenance or UNPROGRAMMED
            self.pre_maintenance = None
            self._alarm("NOT_DOSING", 0, now)
        if boot_loop:
            if self.state in (RUNNING, MIN_RATE):
                self._interrupt(start)
            self.state = SAFE
            self.plan = None
            self._alarm("SAFE_STATE", 1, now)
        elif self.state == RUNNING and self.program:
            dur = None if upper is None else upper
            if dur is None or dur >= gap:
                # an interruption by definition: no drug over max(1 h, two strokes)
                self.history.record(start, 0, INTERRUPTED)
            if restart_pct(dur) < 100:
                base = self.history.last_settled_before(start, self.cfg.settle_ms)
                dose = self._restart_dose(base, dur)
                if dose < self.daily_dose_ng():
                    self.program = therapy.continuous(dose)
                    self.no_increase_until = now + DAY_MS
                self.plan = None
                self._alarm("RESTART_REDUCED", 1, now)
            self.history.record(now, self.daily_dose_ng(), SEG_RUNNING)
        if self.state in (STOPPED, EMERGENCY_STOPPED, MIN_RATE, SAFE) and self.interrupt_ms >= 0:
            # SR-23: the interruption goes on through the outage; resume uses its
            # upper bound, so add what the lower bound (now - start) leaves out
            if upper is None or self.outage_slack_ms < 0:
                self.outage_slack_ms = -1
            else:
                self.outage_slack_ms += upper - lower
        self.heartbeat_ms = now
        if storage is not None:
            self._storage_fault(storage, now)
        if self.state == STOPPED:
            self._alarm("PUMP_STOPPED", 1, now)  # SR-17: the reset ended the session
        if upper is None:
            self.wall_delta = None
            self._alarm("CLOCK_INVALID", 1, now)  # SR-23
        self._refresh_rate(now)
        self._reservoir_alarms(now)
        return self.drain_events()

    def salvage(self, rec):
        """Boot recovery (``store.py``) found ledger record ``rec`` after a gap: it
        cannot be replayed, but what it proves must hold (SR-26). A stroke intent
        counts as delivered for the caps (and comes out of the reservoir estimate,
        the safe direction for its alarms); a command's result is remembered so a
        retry with its id is answered, never applied again, and an accepted patient
        bolus counts for its lockout and daily maximum (SR-29)."""
        k = rec.get("k")
        if k == "stroke":
            t = rec["t"]
            if self.window.t and t < self.window.t[-1]:
                t = self.window.t[-1]
            self.window.add(t, rec["ng_hi"])
            self.res.delivered_nl += rec["nl"]
            if rec["n"] > self.stroke_seq:
                self.stroke_seq = rec["n"]
        elif k == "result":
            cid = rec.get("id")
            if type(cid) is int and 1 <= cid <= ID_MAX and cid not in self.seen:
                res = dict(rec)
                del res["k"]
                del res["t"]
                self._remember(cid, res)
                if res.get("ok") and res.get("name") == "patient_bolus":
                    self.pb_times = self.pb_times + [rec["t"]]  # SR-29 lockout

    def _storage_fault(self, storage, now):
        kind = storage.get("kind")
        if kind == "gap":
            # records were lost between replayed ones: the state is the one before
            # the gap plus what the later records prove (salvage); say so
            self._alarm("STORAGE_CORRUPT", 1, now)
            return
        if kind == "rollback":
            self._alarm("PRESCRIPTION_ROLLBACK", 1, now)
            self.rx_gen = max(self.rx_gen, storage["gen"])
            if storage["conc"] == self.res.concentration:
                if self.state == RUNNING and self.program:
                    self.program = therapy.continuous(storage["ng_day"])
                    self.plan = None
                    self.history.record(now, self.daily_dose_ng(), SEG_RUNNING)
                return
        self._alarm("STORAGE_CORRUPT", 1, now)
        if kind == "corrupt":
            # the generations the ledger recorded are spent: the next clinician
            # confirm is newer than all of them (no false rollback at the next boot)
            self.rx_gen = max(self.rx_gen, storage.get("gen", 0))
        if kind == "corrupt" and storage.get("ng_day") and self.state == UNPROGRAMMED:
            self.res.refill(0, self.cfg.reservoir_capacity_nl, storage["conc"], 0)
            self.path.fill(storage["conc"])
            origin = "paediatric" if self.cfg.up_paediatric_pct <= self.cfg.up_cerebral_pct \
                else "cerebral"
            if self.cfg.up_spinal_pct < self.cfg.up_pct(origin):
                origin = "spinal"
            self._apply_program({"origin": origin, "cap_24h_ng": 0, "cap_1h_ng": 0,
                                 "patient_bolus_ng": 0, "patient_lockout_ms": 0,
                                 "patient_max_per_24h": 0, "screening_dose_ng": 0,
                                 "start_rule": "us", "daily_dose_ng": storage["ng_day"]}, now)
            return
        if self.state in (RUNNING, MIN_RATE):
            self._interrupt(now)
            self.state = STOPPED
            self.stop_reason = "storage"
            self.plan = None

    def _interrupt(self, now):
        """A state interruption starts (stop, emergency, min rate, SAFE)."""
        if self.state in (RUNNING,) or self.interrupt_ms < 0:
            self.interrupt_ms = now
            self.outage_slack_ms = 0
        self.history.record(now, 0, INTERRUPTED)
        self.acc.reset(now)
        self.overlays = []
        self.hold_until = -1

    # ------------------------------------------------------------------ commands
    def handle(self, command, now):
        """Apply or refuse one command at therapy time ``now`` (ms).

        ``command``: ``{"name": str, "id": int (1..2^31-1), "role": str, "args": dict}``.
        Returns ``{"ok": 1|0, "id", "name", "reason": code|None, "message": str,
        "allowed": int (refusals, where one exists), "effect": dict (accepted),
        "hash": int (prepare)}``. Exactly one audit record is written per call.
        A command id seen before returns its recorded result unchanged (SR-26)."""
        name = command.get("name") if type(command) is dict else None
        cid = command.get("id") if type(command) is dict else None
        if type(cid) is int and 1 <= cid <= self.id_floor and cid not in self.seen:
            # SR-26: an id older than the remembered ones might have been applied:
            # refuse it rather than risk applying it twice (ids must increase)
            res = {"ok": 0, "reason": "STALE_ID", "message": "command id %d is older than the"
                   " last %d remembered; use a new, larger id" % (cid, SEEN_IDS),
                   "id": cid, "name": name if type(name) is str else "?"}
            self._audit(now, cid, name, res)
            return res
        if type(cid) is int and 1 <= cid <= ID_MAX and cid in self.seen:
            res = dict(self.seen[cid])
            res["replayed"] = 1
            self._audit(now, cid, name, res)
            return res
        top = self.top_id()
        if type(cid) is int and top + ID_STEP_MAX < cid <= ID_MAX:
            # SR-26 (reading): ids increase by one per command, give or take lost ones;
            # a jump to the end of the id space would leave no id for any later
            # command, an emergency stop included (found by the attacker)
            res = {"ok": 0, "reason": "ID_JUMP", "message": "command id %d is more than %d"
                   " above the last (%d); use the next id" % (cid, ID_STEP_MAX, top),
                   "id": cid, "name": name if type(name) is str else "?"}
            self._audit(now, cid, name, res)
            return res
        try:
            if type(now) is not int or now < self.last_now:
                raise Refusal("CLOCK_BACKWARDS", "time earlier than the last (SR-23)")
            if now > MAX_T:
                raise Refusal("BAD_ARGUMENT", "time beyond the therapy clock's range")
            if type(command) is not dict:
                raise Refusal("BAD_ARGUMENT", "command must be a mapping")
            for key in command:
                if key not in ("name", "id", "role", "args"):
                    raise Refusal("BAD_ARGUMENT", "unknown command field %s" % cmds.shown(key))
            if type(cid) is not int or cid < 1 or cid > ID_MAX:
                raise Refusal("BAD_ARGUMENT", "id must be an integer 1..2^31-1")
            if type(name) is not str or name not in cmds.COMMANDS:
                raise Refusal("UNKNOWN_COMMAND", "unknown command %s" % cmds.shown(name))
            role = command.get("role")
            if role not in cmds.ROLES:
                raise Refusal("BAD_ARGUMENT", "role must be one of " + ", ".join(cmds.ROLES))
            events = []
            self._update(now, events)
            self._pending_events.extend(events)
            self._gate(name, role)
            args = self._validate(name, command.get("args", {}))
            if role not in cmds.roles(name):
                raise Refusal("WRONG_ROLE", "%s may not send %s" % (role, name))
            res = self._dispatch(name, args, role, now)
            res["ok"] = 1
            res["reason"] = None
            res.setdefault("message", "accepted")
        except Refusal as r:
            res = {"ok": 0, "reason": r.reason, "message": r.message}
            if r.allowed is not None:
                res["allowed"] = r.allowed
                res["allowed_unit"] = r.unit
            if r.extra:
                for k in r.extra:
                    res[k] = r.extra[k]
        except Exception as e:  # a bug must not take the pump down; tests look for it
            res = {"ok": 0, "reason": "INTERNAL",
                   "message": "internal error: %s %s" % (type(e).__name__, cmds.shown(str(e)))}
        res["id"] = cid if type(cid) is int else 0
        res["name"] = name if type(name) is str else "?"
        if type(cid) is int and 1 <= cid <= ID_MAX:
            res["command_crc"] = command_crc(command)
            self._remember(cid, res)
        if res["ok"] and command.get("role") == cmds.CLINICIAN:
            self.session_until = now + self.cfg.session_timeout_ms
        self._audit(now, res["id"], res["name"], res)
        return res

    def refuse_unrecorded(self, command, now, message):
        """Refuse ``command`` without looking at it (the runner could not record
        it whole): BAD_ARGUMENT, one audit record, no state change (SR-14)."""
        cid = command.get("id") if type(command) is dict else None
        name = command.get("name") if type(command) is dict else None
        res = {"ok": 0, "reason": "BAD_ARGUMENT", "message": message,
               "id": cid if type(cid) is int and 0 <= cid <= ID_MAX else 0,
               "name": name if type(name) is str and name in cmds.COMMANDS else "?"}
        self._audit(now, res["id"], res["name"], res)
        return res

    def _gate(self, name, role):
        # a bench command's parameters load on first use (itb.calibration): its role
        # and state are checked before them, so a pump in use never loads them (found
        # by the attacker: a patient's calibration_run on a RUNNING pump loaded 6 KB)
        if cmds.spec(name)[2] is None:
            if role not in cmds.roles(name):
                raise Refusal("WRONG_ROLE", "%s may not send %s" % (role, name))
            if self.state not in ACCEPTS[name]:
                raise Refusal("WRONG_STATE", "%s is not accepted in state %s"
                              % (name, self.state))

    def _validate(self, name, args):
        try:
            return cmds.validate(name, args)
        except cmds.CommandError as e:
            raise Refusal(e.reason, e.message)

    def _remember(self, cid, res):
        # SR-26, read for a small heap: a retry is answered with the recorded result,
        # whole for the newest FULL_RESULTS ids; older ones keep the outcome (ok,
        # reason, message, hash, allowed) without the effect (a 390-step plan's effect
        # is 5 KB: 256 of them filled the board's heap, found by the attacker)
        if cid not in self.seen:  # pragma: no branch - defensive: handle() answers seen ids first
            self.seen_order.append(cid)
        self.seen[cid] = res
        if len(self.seen_order) > FULL_RESULTS:
            older = self.seen_order[-FULL_RESULTS - 1]
            full = self.seen[older]
            short = {}
            for k in KEPT_FIELDS:
                if k in full:
                    short[k] = full[k]
            self.seen[older] = short
        while len(self.seen_order) > SEEN_IDS:
            old = self.seen_order.pop(0)
            del self.seen[old]
            if old > self.id_floor:
                self.id_floor = old

    def top_id(self):
        """The highest command id this controller has taken (0: none yet)."""
        top = self.id_floor
        for cid in self.seen:
            if cid > top:
                top = cid
        return top

    def _audit(self, now, cid, name, res):
        # every field of a record is range-checked (SR-1): a peer's odd name, id or
        # time is recorded as "?" / 0 / -1, never allowed to break the audit
        ok_name = type(name) is str and 0 < len(name) <= 32 and name in cmds.COMMANDS
        rec = {"k": "cmd", "t": now if type(now) is int and 0 <= now <= MAX_T else -1,
               "id": cid if type(cid) is int and 0 <= cid <= ID_MAX else 0,
               "name": name if ok_name else "?", "ok": res["ok"], "reason": res["reason"]}
        self.store.append(rec)

    def _dispatch(self, name, args, role, now):
        if name == "prepare":
            return self._prepare(args, role, now)
        if name == "confirm":
            return self._confirm(args, role, now)
        if cmds.is_two_phase(name):
            raise Refusal("NEEDS_CONFIRM", "%s is a therapy change: prepare, then confirm (SR-15)"
                          % name)
        return self._run(name, args, now, 1)

    def _run(self, name, args, now, apply):
        if self.state not in ACCEPTS[name]:
            raise Refusal("WRONG_STATE", "%s is not accepted in state %s" % (name, self.state))
        return getattr(self, "_do_" + name)(args, now, apply)

    def _prepare(self, args, role, now):
        inner = args["command"]
        if inner not in cmds.COMMANDS or not cmds.is_two_phase(inner):
            raise Refusal("BAD_ARGUMENT", "%s is not a two-phase command" % cmds.shown(inner))
        self._gate(inner, role)
        inner_args = self._validate(inner, args["args"])
        if role not in cmds.roles(inner):
            raise Refusal("WRONG_ROLE", "%s may not send %s" % (role, inner))
        res = self._run(inner, inner_args, now, 0)
        self.prepare_seq += 1
        h = binascii.crc32(_canon([inner, inner_args, self.prepare_seq, now]).encode()) & 0xFFFFFFFF
        self.prepared = [h, inner, inner_args, now, role, _canon(res.get("effect"))]
        res["hash"] = h
        res["command"] = inner
        res["message"] = "prepared %s: confirm within %d s" % (inner, self.cfg.confirm_window_ms // 1000)
        return res

    def _confirm(self, args, role, now):
        p = self.prepared
        if p is None:
            raise Refusal("NOTHING_PREPARED", "no prepared command to confirm")
        if args["hash"] != p[0]:
            raise Refusal("HASH_MISMATCH", "hash does not match the prepared %s" % p[1])
        if role != p[4]:
            raise Refusal("WRONG_ROLE", "confirm must come from the role that prepared")
        if now - p[3] > self.cfg.confirm_window_ms:
            raise Refusal("CONFIRM_EXPIRED", "confirm came %d ms after prepare (limit %d, SR-15)"
                          % (now - p[3], self.cfg.confirm_window_ms))
        # SR-15: apply only what was shown; if time or state changed the effect
        # (a plan stepped, a restart band was crossed), ask for a new prepare
        again = self._run(p[1], p[2], now, 0)
        if _canon(again.get("effect")) != p[5]:
            raise Refusal("EFFECT_CHANGED", "the effect of %s changed since prepare: prepare"
                          " again" % p[1])
        res = self._run(p[1], p[2], now, 1)
        self.prepared = None
        res["command"] = p[1]
        # SR-25: the ledger records every accepted generation with what it set, so
        # boot can tell a rolled-back prescription slot from the newest one
        self.rx_gen += 1
        if role == cmds.CLINICIAN:
            # SR-25: a clinician confirmed a prescription: storage faults are over (a
            # service calibration is no prescription and ends nothing)
            self._alarm("PRESCRIPTION_ROLLBACK", 0, now)
            self._alarm("STORAGE_CORRUPT", 0, now)
        self.store.append({"k": "rx", "t": now, "gen": self.rx_gen, "name": p[1],
                           "ng_day": self.daily_dose_ng(), "conc": self.res.concentration,
                           "state": self.state})
        return res

    # ------------------------------------------------------------------ checks
    def _check_daily_dose(self, d, conc):
        cfg = self.cfg
        if d <= 0:
            raise Refusal("OUT_OF_RANGE", "daily dose must be above 0 (use stop or min_rate)")
        if d > cfg.max_daily_dose_ng:
            raise Refusal("HARD_LIMIT", "daily dose over the hard limit (SR-2)",
                          cfg.max_daily_dose_ng, unit=NG_DAY)
        if conc > 0 and d * 1000 < cfg.min_rate_nl_per_day * conc:
            lowest = ceil_div(cfg.min_rate_nl_per_day * conc, 1000)
            raise Refusal("HARD_LIMIT", "volume rate below the pump's minimum rate (SR-2)",
                          ceil_div(lowest, 100) * 100, unit=NG_DAY)

    def _check_basal_change(self, new_hi, new_lo, now):
        """SR-8, SR-9, SR-10/SR-11 no-increase windows, for a new basal daily dose
        (``new_hi`` rounded up, ``new_lo`` rounded down, ng/day) at ``now``."""
        cur = self.daily_dose_ng()
        cfg = self.cfg
        if new_hi > cur and now < self.no_increase_until:
            raise Refusal("NO_INCREASE", "no basal increase until %d ms from now (SR-10, SR-11)"
                          % (self.no_increase_until - now), cur, unit=NG_DAY)
        base = self.history.lowest_dose(now)
        if TYPE_CHECKING:  # a basal change is accepted only once a prescription is set
            assert self.rx is not None
        up = cfg.up_pct(self.rx["origin"])
        if base is not None and not up_cap_ok(new_hi, base, up):
            raise Refusal("UP_CAP", "over +%d %% of the lowest dose in 24 h (SR-8)" % up,
                          up_cap_max(base, up), unit=NG_DAY)
        top = self.history.highest_settled(now, cfg.settle_ms)
        down = cfg.taper_down_pct
        if top is not None and not down_cap_ok(new_lo, top, down):
            lo = down_cap_min(top, down)
            offer = {"command": "taper", "target_daily_dose_ng": new_lo, "step_pct": down,
                     "every_ms": DAY_MS}
            raise Refusal("DOWN_CAP", "below -%d %% of the highest settled dose in 24 h (SR-9);"
                          " a taper plan is offered" % down, lo, {"offer": offer}, NG_DAY)

    def _project(self, now, until):
        """Run this (disposable) controller forward to ``until`` with every stroke
        delivered, checking the 24 h and 1 h windows ending at each projected
        stroke against the caps in effect then (SR-6). Returns ``(mass_ng,
        strokes)`` projected in ``(now, now + 24 h]`` (mass as counted, upper
        bound). Raises Refusal CAP_EXCEEDED. Needs no memory beyond the
        controller's own window log (a prepare must fit a small, fragmented heap)."""
        self.projecting = 1
        self.alarms = al.Alarms(self.cfg.realarm_ms)
        mass = 0
        strokes = 0
        while True:
            t = self.next_wake()
            if t < 0 or t > until:
                break
            self._update(t, [])
            s = self._decide(t, [])
            if s is not None:
                caps = self.caps()
                sums = self.window.sums(t)
                for i in (0, 1):
                    if sums[i] > caps[i]:
                        raise Refusal("CAP_EXCEEDED", "projected %s window reaches %d ng over its"
                                      " cap %d ng (SR-6)" % ("24 h" if i == 0 else "1 h",
                                                             sums[i], caps[i]))
                if t <= now + DAY_MS:
                    mass += s["ng_hi"]
                    strokes += 1
                self.complete(s["n"], "ok", t)
            elif 0 <= self.next_wake() <= t:
                # nothing more can be delivered (e.g. computed empty): defensive,
                # guards an endless projection
                break  # pragma: no cover
        return mass, strokes

    def _check_caps(self, trial, now, horizon_ms=DAY_MS):
        """SR-6 on ``trial`` (a clone with the change applied): the mass already
        counted fits the new caps at every window position from ``now`` on, and
        every window ending at a projected stroke up to ``now + horizon`` stays
        within the cap in effect then. Returns the projected mass delivered in
        ``(now, now + 24 h]`` (ng, upper bound) and strokes."""
        caps_now = trial.caps()
        for i in (0, 1):
            if trial.window.max_sum(now, WINDOWS_MS[i]) > caps_now[i]:
                raise Refusal("CAP_EXCEEDED", "mass already counted exceeds the new cap (SR-6)")
        return trial._project(now, now + horizon_ms)

    def _largest_feasible(self, lo, hi, step, attempt):
        """Largest value in [lo, hi] (multiples of ``step``) for which ``attempt``
        raises no CAP_EXCEEDED; None if none (binary search, at most 16 tries)."""
        lo = ceil_div(lo, step)
        hi = hi // step
        best = None
        tries = 0
        while lo <= hi and tries < 16:
            tries += 1
            mid = (lo + hi) // 2
            try:
                attempt(mid * step)
                best = mid * step
                lo = mid + 1
            except Refusal:
                hi = mid - 1
        return best

    def _effect(self, trial, now, mass_24h, strokes):
        c = trial.res.concentration
        d = trial.daily_dose_ng()
        e = {"daily_dose_ng": d, "mass_24h_ng": mass_24h, "strokes_24h": strokes,
             "concentration_ug_per_ml": c, "state": trial.state}
        if c > 0:  # pragma: no branch - defensive: every caller has a library concentration
            e["volume_nl_per_day"] = volume_nl_up(d, c)
            planned = trial.planned_nl_per_day()
            # SR-19: LOW_RESERVOIR at 4 mL or at 5 days to empty, whichever comes first
            level = self.cfg.low_reservoir_nl
            if self.cfg.low_reservoir_days * planned > level:
                level = self.cfg.low_reservoir_days * planned
            e["low_reservoir_in_ms"] = trial.res.days_to(level, planned)
            e["empty_in_ms"] = trial.res.days_to(0, planned)
            e["stroke_ng"] = mass_ng_up(self.cfg.stroke_nl, c)
            if d > 0:
                e["strokes_per_day"] = ceil_div(e["volume_nl_per_day"], self.cfg.stroke_nl)
        cap = trial.caps()
        e["cap_24h_ng"] = cap[0]
        e["cap_1h_ng"] = cap[1]
        return e

    def _basal_effect(self, trial, now, horizon_ms=DAY_MS):
        mass, strokes = self._check_caps(trial._clone(), now, horizon_ms)
        return self._effect(trial, now, mass, strokes)

    def _set_program(self, steps, now, cancel_plan=1):
        self.program = steps
        if cancel_plan:
            self.plan = None
        if not (self.fault == "empty" or self.fault_marked):
            # during a fault interruption the new dose is not in effect (no drug
            # flows); _fault_end records it when delivery resumes
            self.history.record(now, therapy.daily_dose_up(steps), SEG_RUNNING)
        self.history.prune(now)
        self._refresh_rate(now)

    def _change_basal(self, steps, now, apply):
        d_hi = therapy.daily_dose_up(steps)
        d_lo = therapy.daily_dose_down(steps)
        conc = self.path.tip_concentration(self.res.concentration)
        self._check_daily_dose(d_hi, conc)
        for _start, rate in steps:
            # SR-2: every step, not only the average, within the pump's rates; a
            # zero step would be an unannounced interruption
            try:
                self._check_daily_dose(rate, conc)
            except Refusal as r:
                r.message = "flex step at minute %d: %s" % (_start, r.message)
                raise
        self._check_basal_change(d_hi, d_lo, now)

        def attempt(steps2):
            trial = self._clone()
            trial._set_program(steps2, now)
            return trial, self._basal_effect(trial, now)

        try:
            trial, effect = attempt(steps)
        except Refusal as r:
            if r.reason != "CAP_EXCEEDED" or len(steps) != 1:
                raise
            best = self._largest_feasible(100, d_hi - 100, 100,
                                          lambda v: attempt(therapy.continuous(v)))
            r.allowed = best
            r.unit = NG_DAY
            raise
        effect["plan_cancelled"] = 1 if self.plan is not None else 0
        if apply:
            self._set_program(steps, now)
            self._reservoir_alarms(now)
        return {"effect": effect}

    # ------------------------------------------------------------------ handlers
    def _do_program(self, args, now, apply):
        cfg = self.cfg
        if not is_pump_concentration(self.res.concentration) or self.res.fill_nl <= 0:
            raise Refusal("NO_DRUG", "refill the reservoir with a library concentration first")
        d = args["daily_dose_ng"]
        conc = self.path.tip_concentration(self.res.concentration)
        self._check_daily_dose(d, conc)
        for key in ("cap_24h_ng", "cap_1h_ng"):
            if args[key] > cfg.max_daily_dose_ng:
                raise Refusal("HARD_LIMIT", "%s over the hard maximum daily dose (SR-2)" % key,
                              cfg.max_daily_dose_ng, unit="ng")
        if args["cap_24h_ng"] and args["cap_1h_ng"] > args["cap_24h_ng"]:
            raise Refusal("OUT_OF_RANGE", "1 h cap above the 24 h cap", args["cap_24h_ng"],
                          unit="ng")
        pb = args["patient_bolus_ng"]
        if pb:
            if pb > cfg.max_bolus_ng:
                raise Refusal("HARD_LIMIT", "patient bolus over the maximum bolus (SR-2)",
                              cfg.max_bolus_ng, unit="ng")
            if args["patient_max_per_24h"] < 1:
                raise Refusal("OUT_OF_RANGE", "patient_max_per_24h must be at least 1 (SR-29)")
        if args["screening_effect_ms"] and not args["screening_dose_ng"]:
            # SR-10: a screening effect marks the first program after implant; without
            # its dose the start rule could not apply, and the program would pass as an
            # established therapy (any dose on day 0): refused, never guessed
            raise Refusal("BAD_ARGUMENT", "screening_effect_ms without screening_dose_ng:"
                          " the SR-10 start rule needs the effective screening dose")
        if args["screening_dose_ng"]:
            lim = start_limit_ng(args["screening_dose_ng"], args["screening_effect_ms"],
                                 args["start_rule"])
            if d > lim:
                raise Refusal("START_RULE", "first program over the SR-10 start dose", lim,
                              unit=NG_DAY)
        if self.state == SAFE and self.program:
            raise Refusal("WRONG_STATE", "a prescription exists: use resume or stop (SR-27)")
        trial = self._clone()
        trial._apply_program(args, now)
        trial._check_stroke_fits()
        effect = self._basal_effect(trial, now)
        for o in self.overlays:
            if o.source == "calibration":  # bench strokes never run into a therapy
                effect["calibration_cancelled"] = o.remaining
        if apply:
            self._apply_program(args, now)
            self._reservoir_alarms(now)
        return {"effect": effect}

    def _apply_program(self, args, now):
        keys = ("origin", "cap_24h_ng", "cap_1h_ng", "patient_bolus_ng", "patient_lockout_ms",
                "patient_max_per_24h", "screening_dose_ng", "start_rule")
        self.rx = dict((k, args[k]) for k in keys)
        # a calibration run still going is cancelled (found by the attacker: its strokes
        # went on, on top of basal, for days), and its measurement ended
        self.overlays = [o for o in self.overlays if o.source != "calibration"]
        self.calibration = [0, 0, 0]
        if self.state == SAFE:
            self._alarm("SAFE_STATE", 0, now)
        self.state = RUNNING
        self.interrupt_ms = -1
        # therapy starts now: priming strokes before it are not "last good delivery",
        # or a first stall would count the wait since priming as an interruption (SR-11)
        self.last_good_ms = now
        if args["screening_dose_ng"]:
            self.no_increase_until = now + DAY_MS  # SR-10
        self.acc.reset(now)
        self._set_program(therapy.continuous(args["daily_dose_ng"]), now)

    def _do_set_daily_dose(self, args, now, apply):
        return self._change_basal(therapy.continuous(args["daily_dose_ng"]), now, apply)

    def _do_flex(self, args, now, apply):
        return self._change_basal(args["steps"], now, apply)

    def _do_titrate(self, args, now, apply):
        return self._plan("titrate", args, now, apply)

    def _do_taper(self, args, now, apply):
        return self._plan("taper", args, now, apply)

    def _plan(self, kind, args, now, apply):
        cur = self.daily_dose_ng()
        up = kind == "titrate"
        try:
            doses = therapy.plan_doses(cur, args["target_daily_dose_ng"], args["step_pct"], up)
        except ValueError as e:
            raise Refusal("PLAN_INVALID", "%s: %s (SR-13)" % (kind, e))
        conc = self.path.tip_concentration(self.res.concentration)
        every = args["every_ms"]
        # SR-13: every step checked against SR-8/9 (and the no-increase windows) on
        # the plan's own timeline, then SR-6 over the whole plan plus 24 h
        trial = self._clone()
        trial.plan = None
        for i in range(len(doses)):
            t = now + i * every
            self._check_daily_dose(doses[i], conc)
            try:
                trial._check_basal_change(doses[i], doses[i], t)
            except Refusal as r:
                r.message = "step %d of %d (%d ng/day): %s" % (i + 1, len(doses), doses[i],
                                                              r.message)
                raise
            trial.history.record(t, doses[i], SEG_RUNNING)
            trial.program = therapy.continuous(doses[i])
        trial = self._clone()
        trial._start_plan(kind, doses, every, now)
        horizon = (len(doses) - 1) * every + DAY_MS
        effect = self._basal_effect(trial, now, horizon)
        effect["plan_doses_ng"] = doses
        effect["plan_cancelled"] = 1 if self.plan is not None else 0
        if apply:
            self._start_plan(kind, doses, every, now)
            self._reservoir_alarms(now)
        return {"effect": effect}

    def _start_plan(self, kind, doses, every, now):
        self._set_program(therapy.continuous(doses[0]), now)
        self._alarm("PLAN_HELD", 0, now)
        self.plan = [kind, doses, 1, now + every, every] if len(doses) > 1 else None

    def _plan_step(self, now, events):
        if TYPE_CHECKING:  # called only while a plan runs (_update)
            assert self.plan is not None
        kind, doses, i, t, every = self.plan
        d = doses[i]
        if not self.projecting:
            try:
                conc = self.path.tip_concentration(self.res.concentration)
                self._check_daily_dose(d, conc)
                self._check_basal_change(d, d, now)
                trial = self._clone()
                trial._set_program(therapy.continuous(d), now, 0)
                self._check_caps(trial, now)
            except Refusal:
                # SR-13: a step refused at run time holds the current dose
                self.plan[3] = t + every
                self._alarm("PLAN_HELD", 1, now, events)
                return
        self._set_program(therapy.continuous(d), now, 0)
        self._alarm("PLAN_HELD", 0, now, events)
        if i + 1 >= len(doses):
            self.plan = None
        else:
            self.plan = [kind, doses, i + 1, t + every, every]

    def _bolus_strokes(self, dose_ng):
        conc = self.path.tip_concentration(self.res.concentration)
        if conc <= 0:
            raise Refusal("NO_DRUG", "no drug in the pump")  # pragma: no cover - defensive: RUNNING always has drug
        sm = mass_ng_up(self.cfg.stroke_nl, conc)
        n = (dose_ng + sm // 2) // sm
        if n * sm > self.cfg.max_bolus_ng and n > 0:
            n -= 1
        if n < 1:
            raise Refusal("OUT_OF_RANGE", "bolus smaller than half a stroke (%d ng)" % sm, sm,
                          unit="ng")
        return n, sm

    def _overlay_trial(self, source, n, interval, now):
        trial = self._clone()
        trial.overlays.append(Overlay(source, now, n, interval))
        return trial

    def _do_bolus(self, args, now, apply):
        cfg = self.cfg
        dose = args["dose_ng"]
        if dose > cfg.max_bolus_ng:
            raise Refusal("HARD_LIMIT", "bolus over the maximum single bolus (SR-2)",
                          cfg.max_bolus_ng, unit="ng")
        if self.overlays:
            raise Refusal("BOLUS_ACTIVE", "a bolus is still being delivered")
        n, sm = self._bolus_strokes(dose)
        shortest = n * cfg.min_stroke_interval_ms
        if args["duration_ms"] < shortest:
            raise Refusal("BOLUS_TOO_SHORT", "too short for the maximum rate (SR-2)", shortest,
                          unit="ms")
        interval = args["duration_ms"] // n

        def attempt(k):
            trial = self._overlay_trial("bolus", k, interval, now)
            return trial, self._basal_effect(trial, now)

        try:
            trial, effect = attempt(n)
        except Refusal as r:
            if r.reason == "CAP_EXCEEDED":  # pragma: no branch - defensive: attempt() refuses only CAP_EXCEEDED
                best = self._largest_feasible(1, n - 1, 1, attempt)
                r.allowed = best * sm if best else 0
                r.unit = "ng"
            raise
        effect["bolus_ng"] = n * sm
        effect["bolus_strokes"] = n
        if apply:
            self.overlays.append(Overlay("bolus", now, n, interval))
        return {"effect": effect}

    def _do_patient_bolus(self, args, now, apply):
        rx = self.rx
        if not rx or not rx["patient_bolus_ng"]:
            raise Refusal("PATIENT_BOLUS_DISABLED", "patient bolus is not enabled")
        recent = [t for t in self.pb_times if t > now - DAY_MS]
        if recent and now < recent[-1] + rx["patient_lockout_ms"]:
            wait = recent[-1] + rx["patient_lockout_ms"] - now
            raise Refusal("LOCKOUT", "in lockout: next allowed in %d s (SR-29)" % ceil_div(wait, 1000),
                          wait, unit="ms")
        if len(recent) >= rx["patient_max_per_24h"]:
            wait = recent[len(recent) - rx["patient_max_per_24h"]] + DAY_MS - now
            raise Refusal("PATIENT_MAX", "24 h maximum reached (SR-29)", wait, unit="ms")
        if self.overlays:
            raise Refusal("BOLUS_ACTIVE", "a bolus is still being delivered")
        n, sm = self._bolus_strokes(rx["patient_bolus_ng"])
        dur = self.cfg.patient_bolus_duration_ms
        shortest = n * self.cfg.min_stroke_interval_ms
        interval = (dur if dur > shortest else shortest) // n
        trial = self._overlay_trial("patient_bolus", n, interval, now)
        effect = self._basal_effect(trial, now)
        effect["bolus_ng"] = n * sm
        if apply:  # pragma: no branch - defensive: patient_bolus is single-phase, always applied
            self.overlays.append(Overlay("patient_bolus", now, n, interval))
            self.pb_times = recent + [now]
        return {"effect": effect}

    def _do_stop(self, args, now, apply):
        effect = {"state": STOPPED, "reason": args["reason"]}
        if apply:
            if self.state == SAFE:
                self._alarm("SAFE_STATE", 0, now)
            self._interrupt(now)
            self.state = STOPPED
            self.plan = None
            self.stop_reason = args["reason"]
            self.mri_checked = 0
            self._refresh_rate(now)
            self._reservoir_alarms(now)
        return {"effect": effect}

    def _do_emergency_stop(self, args, now, apply):
        target = MIN_RATE if self.cfg.emergency_min_rate else EMERGENCY_STOPPED
        if self.state in (UNPROGRAMMED, MAINTENANCE):
            self.overlays = []
            return {"effect": {"state": self.state}}
        if self.state == EMERGENCY_STOPPED:
            return {"effect": {"state": self.state}}
        self._interrupt(now)
        self.state = target
        self.plan = None
        if target == MIN_RATE:
            self.min_rate_nl = self.cfg.min_rate_nl_per_day
        self._alarm("WITHDRAWAL_RISK", 1, now)  # SR-16: repeats until resumed
        self._refresh_rate(now)
        return {"effect": {"state": target}}

    def _do_min_rate(self, args, now, apply):
        cfg = self.cfg
        rate = args["rate_nl_per_day"]
        if rate < cfg.min_rate_nl_per_day:
            raise Refusal("HARD_LIMIT", "below the pump's minimum rate (SR-2)",
                          cfg.min_rate_nl_per_day, unit="nl_per_day")
        max_day = cfg.max_rate_nl_per_min * 1440
        if rate > max_day:
            raise Refusal("HARD_LIMIT", "over the pump's maximum rate (SR-2)", max_day,
                          unit="nl_per_day")
        conc = self.path.tip_concentration(self.res.concentration)
        ng_day = mass_ng_up(rate, conc)
        if self.program and self.state == RUNNING and ng_day >= self.daily_dose_ng():
            raise Refusal("OUT_OF_RANGE", "minimum rate must be below the basal dose (SR-18)")
        trial = self._clone()
        trial._enter_min_rate(rate, now)
        effect = self._basal_effect(trial, now)
        effect["min_rate_ng_per_day"] = ng_day  # SR-18: shown in µg/day too
        if apply:
            self._enter_min_rate(rate, now)
        return {"effect": effect}

    def _enter_min_rate(self, rate, now):
        self._interrupt(now)
        self.state = MIN_RATE
        self.plan = None
        self.min_rate_nl = rate
        self._refresh_rate(now)

    def _do_resume(self, args, now, apply):
        if not self.program:
            raise Refusal("WRONG_STATE", "nothing to resume: program first")
        if self.state == STOPPED and self.stop_reason == "mri" and not self.mri_checked:
            raise Refusal("MRI_CHECK_REQUIRED", "run post_scan_check after an MRI stop (SR-17)")
        start = self.interrupt_ms if self.interrupt_ms >= 0 else now
        dur = None if self.outage_slack_ms < 0 else now - start + self.outage_slack_ms
        pct = restart_pct(dur)
        base = self.history.last_settled_before(start, self.cfg.settle_ms)
        cur = self.daily_dose_ng()
        want = args["daily_dose_ng"]
        if pct < 100:
            cap = self._restart_dose(base, dur)
            if want > cap:
                raise Refusal("RESTART_CAP", "restart after an interruption of %s h is capped at"
                              " %d %% (SR-11)" % ("unknown" if dur is None else str(dur // HOUR_MS),
                                                 pct), cap, unit=NG_DAY)
            steps = therapy.continuous(want or cap)
            capped = 1
        else:
            if want > cur:
                raise Refusal("RESTART_CAP", "resume may not increase the dose (SR-11)", cur,
                              unit=NG_DAY)
            steps = therapy.continuous(want) if want else self.program
            capped = 0
        d = therapy.daily_dose_up(steps)
        self._check_daily_dose(d, self.path.tip_concentration(self.res.concentration))
        trial = self._clone()
        trial._apply_resume(steps, capped, now)
        effect = self._basal_effect(trial, now)
        effect["restart_pct"] = pct
        if apply:
            self._apply_resume(steps, capped, now)
            self._reservoir_alarms(now)
        return {"effect": effect}

    def _apply_resume(self, steps, capped, now):
        for code in ("WITHDRAWAL_RISK", "PUMP_STOPPED", "SAFE_STATE"):
            self._alarm(code, 0, now)
        self.state = RUNNING
        self.stop_reason = None
        self.interrupt_ms = -1
        self.outage_slack_ms = 0
        if capped:
            self.no_increase_until = now + DAY_MS  # SR-11: no increase for 24 h
        self.acc.reset(now)
        self._set_program(steps, now)

    def _do_post_scan_check(self, args, now, apply):
        if self.stop_reason != "mri":
            raise Refusal("WRONG_STATE", "post_scan_check follows an MRI stop (SR-17)")
        self.mri_checked = 1
        return {"effect": {"mri_checked": 1}}

    def _do_refill(self, args, now, apply):
        cfg = self.cfg
        c = args["concentration_ug_per_ml"]
        if not is_pump_concentration(c):
            if c == SCREENING_CONCENTRATION_UG_PER_ML:
                raise Refusal("BAD_CONCENTRATION", "50 ug/mL is the screening strength, not a"
                              " pump fill (SR-2)")
            raise Refusal("BAD_CONCENTRATION", "%d ug/mL is not in the drug library (SR-21):"
                          " use one of %s" % (c, ", ".join(str(x) for x in
                                                          PUMP_CONCENTRATIONS_UG_PER_ML)))
        if args["aspirated_nl"] > cfg.reservoir_capacity_nl:
            raise Refusal("HARD_LIMIT", "aspirated more than the reservoir holds (%s)"
                          % ml_text(cfg.reservoir_capacity_nl), cfg.reservoir_capacity_nl,
                          unit="nl")
        partial = args["partial"]
        if partial and self.res.concentration and c != self.res.concentration:
            raise Refusal("PARTIAL_CONC_CHANGE", "a concentration change needs full aspiration"
                          " (SR-21)")
        after = args["volume_nl"]
        if partial:
            r = self.res.remaining_nl()
            keep = r - args["aspirated_nl"]
            after += keep if keep > 0 else 0
        if after > cfg.reservoir_capacity_nl:
            raise Refusal("HARD_LIMIT", "more than the reservoir holds (%s)"
                          % ml_text(cfg.reservoir_capacity_nl), cfg.reservoir_capacity_nl,
                          unit="nl")
        trial = self._clone()
        disc = trial._apply_refill(args, now)
        if trial.rx is not None:
            # a stronger drug reaches the tip days later, past the SR-6 projection:
            # a stroke that can never fit the prescription caps would hold basal
            # for good (withdrawal), so it is refused now
            trial._check_stroke_fits()
        if self.state in (RUNNING, MIN_RATE):
            effect = self._basal_effect(trial, now)
        else:
            effect = self._effect(trial, now, 0, 0)
        effect["discrepancy_nl"] = disc[0]
        effect["discrepancy_flagged"] = 1 if disc[1] else 0
        effect["reservoir_nl"] = trial.res.remaining_nl()
        if apply:
            self._apply_refill(args, now)
        return {"effect": effect}

    def _apply_refill(self, args, now):
        self.calibration = [0, 0, 0]  # a new fill: a bench measurement begins again
        old = self.res.concentration
        disc, flagged, discarded = self.res.refill(args["aspirated_nl"], args["volume_nl"],
                                                   args["concentration_ug_per_ml"], args["partial"])
        self.aspirated_pg += discarded * old
        self.filled_pg += args["volume_nl"] * args["concentration_ug_per_ml"]
        if flagged:
            self._pulse("REFILL_DISCREPANCY", now)  # SR-20
        self._reservoir_alarms(now)
        self._refresh_rate(now)
        return disc, flagged

    def _do_prime(self, args, now, apply):
        cfg = self.cfg
        if not is_pump_concentration(self.res.concentration) or self.res.remaining_nl() <= 0:
            raise Refusal("NO_DRUG", "refill the reservoir before priming")
        if self.overlays:
            raise Refusal("BOLUS_ACTIVE", "priming already in progress")
        trial = self._clone()
        n = trial._apply_prime(args["contents"], now)
        effect = self._basal_effect(trial, now) if n else self._effect(trial, now, 0, 0)
        effect["prime_strokes"] = n
        effect["prime_nl"] = n * cfg.stroke_nl
        effect["dead_volume_nl"] = cfg.dead_volume_nl
        # SR-22: drug mass of the priming delivery shown before confirmation
        effect["prime_mass_ng"] = effect["mass_24h_ng"]
        if apply:
            self._apply_prime(args["contents"], now)
        return {"effect": effect}

    def _apply_prime(self, contents, now):
        cfg = self.cfg
        old = self.path.mass_pg()
        self.aspirated_pg += old  # whatever the path held is declared replaced
        if contents == "drug":
            self.path.fill(self.res.concentration)
            self.filled_pg += self.path.mass_pg()
            return 0
        self.path.fill(0)
        # SR-21: prime until the drug front reaches 80 % of the dead volume
        n = ceil_div(cfg.dead_volume_nl * 80 // 100, cfg.stroke_nl)
        if n:
            interval = ceil_div(cfg.stroke_nl * MINUTE_MS, cfg.prime_rate_nl_per_min)
            if interval < cfg.min_stroke_interval_ms:
                interval = cfg.min_stroke_interval_ms
            self.overlays.append(Overlay("prime", now, n, interval))
        return n

    def _do_port_injection(self, args, now, apply):
        # SR-30: the injection happened; it is recorded (never refused for caps) and
        # its mass enters the caps, which then hold basal if needed (SR-7).
        effect = {"dose_ng": args["dose_ng"]}
        if apply:
            self.window.add(now, args["dose_ng"])
        return {"effect": effect}

    def _do_acknowledge(self, args, now, apply):
        code = args["code"]
        if code != "all" and code not in al.CODES:
            raise Refusal("BAD_ARGUMENT", "unknown alarm code %s" % cmds.shown(code))
        n = self.alarms.acknowledge(code)
        return {"effect": {"acknowledged": n}}

    def _do_set_clock_offset(self, args, now, apply):
        effect = {"utc_offset_min": args["utc_offset_min"]}
        if apply:
            self.utc_offset_min = args["utc_offset_min"]
            self._refresh_rate(now)
        return {"effect": effect}

    def _do_maintenance(self, args, now, apply):
        if self.state in (STOPPED, EMERGENCY_STOPPED, SAFE):
            self.pre_maintenance = self.state
        else:
            self.pre_maintenance = UNPROGRAMMED
        self.state = MAINTENANCE
        self.overlays = []
        self._alarm("NOT_DOSING", 1, now)  # SR-27
        return {"effect": {"state": MAINTENANCE}}

    def _do_calibration_run(self, args, now, apply):
        from itb import calibration  # bench only: never loaded on a pump in use (heap)

        return calibration.run(self, args, now, apply)

    def _do_set_calibration(self, args, now, apply):
        from itb import calibration

        return calibration.correct(self, args, now, apply)

    # ------------------------------------------------------------------ status
    def status(self):
        """Plain-data status (ints and strings): state, dose, caps, window sums,
        reservoir bounds, alarms."""
        r = self.res
        sums = self.window.sums(self.last_now)
        caps = self.caps()
        return {
            "t": self.last_now, "state": self.state, "daily_dose_ng": self.daily_dose_ng(),
            "program": self.program, "plan": self.plan, "caps_ng": caps, "window_ng": sums,
            "reservoir_nl": r.remaining_nl(), "reservoir_pess_nl": r.pessimistic_nl(),
            "reservoir_opt_nl": r.optimistic_nl(), "concentration_ug_per_ml": r.concentration,
            "fault": self.fault, "alarms": self.alarms.listing(), "strokes": self.stroke_seq,
            "min_rate_nl_per_day": self.min_rate_nl if self.state == MIN_RATE else 0,
            "next_wake": self.next_wake(),
            "calibration": list(self.calibration),  # [ok, not ok, measurement id]
            "stroke_nl": self.cfg.stroke_nl,
        }


class _NullStore:
    def append(self, rec):
        pass  # pragma: no cover - defensive: clones write no records today


def command_crc(command):
    """CRC-32 of a command's name, role and args (canonical text): a remembered result
    carries it, so a host can tell the result of *its* command from that of another
    command that used the same id (SR-26; two hosts, or one that lost its ids).
    ``command``: a dict; 0 when it cannot be written out."""
    try:  # the trace's canonical text: a replayed trace gives the same CRC
        text = encode([command.get("name"), command.get("role"), command.get("args", {})])
    except ValueError:
        return 0  # an integer too long to write out (CPython)
    return binascii.crc32(text.encode()) & 0xFFFFFFFF


def _canon(obj) -> str:
    """Canonical text of ints, strings, lists and dicts (sorted keys)."""
    if type(obj) is dict:
        return "{" + ",".join(_canon(k) + ":" + _canon(obj[k]) for k in sorted(obj)) + "}"
    if type(obj) in (list, tuple):
        return "[" + ",".join(_canon(x) for x in obj) + "]"
    if type(obj) is str:
        return '"' + obj.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if obj is None:
        return "null"  # pragma: no cover - defensive: effects and arguments hold no None
    return str(int(obj))
