"""Discrete-event simulation: the unchanged controller, through its runner, against
the pump and patient models.

The clock jumps from one thing that is due to the next: the runner's next wake-up
(``Runner.next_wake``, one ``advance`` per wake-up, as the board app does), the
next scenario event, or the next hourly sample; nothing ticks in between. Each
stroke the runner commands goes to the pump model (``sim/pump.py``); what leaves
the catheter tip goes to the patient model (``sim/patient.py``), which is solved
exactly between doses. A run is a pure function of (scenario, seed, patient).

Order at one instant: the hourly sample first (it closes the half-open hour
before it), then runner wake-ups, then scenario events in file order.

Clocks: ``t`` is simulation time (ms since the scenario start). The controller's
therapy clock equals it until a power cut whose length the controller cannot
measure (an invalid RTC): afterwards therapy time lags by ``offset_ms``. The
board's real-time clock reads ``EPOCH_UTC_MS + t + rtc_delta`` (``rtc_jump``) or
is invalid (``rtc_invalid``, until the next ``rtc_jump`` sets it).

Durability: scenarios with a ``power_cut`` event run the controller over the
durable store (``itb/store.py`` on a ``MemoryFS``) and every power-on recovers
from it (``store.Store.recover``); others run it in memory (faster; nothing
differs while the power stays on).

Set-up at t = 0 (confirmed commands, not in the ``commands`` table): refill the
empty reservoir with ``[drug]``, prime (the catheter holds drug, as for an
established therapy; with a screening dose too, a simplification), program.
"""

import json
import random

from itb import commands as cmds
from itb import runner as rn
from itb import store as st
from itb import trace
from itb.drugs import PUMP_CONCENTRATIONS_UG_PER_ML, DeviceConfig
from itb.fs import MemoryFS
from itb.units import dead_volume_nl

from host_tools import units
from sim import patient as pt
from sim.pump import Pump

# The simulator writes millions of trace records of a few dozen shapes: remember
# their key order (itb/trace.py; off on the board, where heap is scarcer than time).
trace.cache_key_order(64)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
EPOCH_UTC_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC: the scenario starts at midnight
POWERED_OFF = "POWERED_OFF"  # reason of a command sent while the pump had no power


class NoAudit:
    """The controller's audit sink in the simulator: the runner trace is the record."""

    def append(self, rec):
        pass


class Simulation:
    """One run. ``Simulation(scenario, params=None, trace=None).run()`` -> ``Result``.

    ``params``: a ``patient.PatientParams`` (default: the scenario's named model);
    ``trace``: a callable taking each runner trace line (JSONL, ``itb/trace.py``);
    ``fluid``: a callable taking ``(t_ms, volume_nl)`` for each stroke that moved
    fluid: the pump model's true volume (whole nL) leaving the pump, and so the
    catheter tip (balance readings, ``sim/balance.py``). Neither changes the run."""

    def __init__(self, scenario, params=None, trace=None, fluid=None):
        self.sc = scenario
        self.params = params or pt.patient_params(scenario.model)
        self.trace_sink = trace
        self.fluid_sink = fluid
        self.rng = random.Random(scenario.seed)
        self.cfg = DeviceConfig(scenario.config)
        self.t = 0
        self.rtc_delta = 0
        self.rtc_valid = True
        days = -(-scenario.duration_ms // DAY_MS)
        self.day_ng = [0.0] * days
        self.day_nl = [0.0] * days
        self.day_rows = []
        self.hour_ng = 0.0
        self.hour_nl = 0.0
        self.del_t = []  # every delivery at the tip: time (ms) and mass (ng)
        self.del_ng = []
        self.alarms = []
        self.commands = []
        self.sim_events = []  # simulator events as applied (power cuts, faults, clock)
        self.setup = []
        self.rows = []
        self.ids = 0
        self.pump = Pump(scenario.stroke_error_pct, scenario.stroke_bias_pct,
                         self.cfg.dead_volume_nl, self.rng, scenario.battery_life_days,
                         self._delivered)
        self.patient = None  # made after the set-up (it depends on what was accepted)
        self.durable = any(e.name == "power_cut" for e in scenario.events)
        self.fs = MemoryFS() if self.durable else None
        self.powered = True
        self.dead = False
        self.booting = False
        self._restart_at = None  # when the power comes back after a cut (simulation ms)
        if self.durable:
            self.runner, _ = st.boot(self.fs, self.pump, scenario.config or None,
                                     self._trace, self._rtc())
        else:
            self.runner = rn.start(scenario.config or None, self.pump, self._trace, NoAudit())
            self.runner.set_rtc(0, self._rtc())

    # -- sinks
    def _trace(self, line):
        if self.trace_sink is not None:
            self.trace_sink(line)
        if '"k":"alarm"' in line:
            rec = json.loads(line)
            if rec["ev"] == "raise":
                # the record's therapy time on the simulation clock (a chunk of
                # wake-ups runs ahead of self.t); at power-on the clock may have lost
                # the outage, so the boot's own time
                t = self.t if self.booting else rec["t"] + self.pump.offset_ms
                self.alarms.append({"t_s": t // 1000, "code": rec["code"],
                                    "priority": rec["pri"]})

    def _delivered(self, t, mass_ng, volume_nl):
        self.patient.dose(t, mass_ng)
        self.hour_ng += mass_ng
        self.hour_nl += volume_nl
        d = t // DAY_MS
        if d < len(self.day_ng):
            self.day_ng[d] += mass_ng
            self.day_nl[d] += volume_nl
        self.del_t.append(t)
        self.del_ng.append(mass_ng)
        if volume_nl and self.fluid_sink is not None:
            self.fluid_sink(t, volume_nl)

    def _rtc(self):
        return EPOCH_UTC_MS + self.t + self.rtc_delta if self.rtc_valid else None

    # -- commands
    def _send(self, name, args, role):
        self.ids += 1
        now = self.t - self.pump.offset_ms
        return self.runner.command({"name": name, "id": self.ids, "role": role, "args": args}, now)

    def command(self, name, args):
        """Send one scenario command (prepare + confirm when two-phase); returns the
        result. The physical part (refill, priming, a port injection) happens
        only when the controller accepted it."""
        role = cmds.roles(name)[0]
        if not self.powered:
            return {"ok": False, "reason": POWERED_OFF,
                    "message": "the pump had no power (power cut or battery)"}
        args = dict(args)
        if name == "refill" and "aspirated_nl" not in args:
            # what was really aspirated, as read off a syringe (0.1 mL)
            left = self.pump.reservoir_nl if not args.get("partial") else 0
            args["aspirated_nl"] = int(round(left / 100_000)) * 100_000
        try:
            if cmds.is_two_phase(name):
                res = self._send("prepare", {"command": name, "args": args}, role)
                if res["ok"]:
                    res = self._send("confirm", {"hash": res["hash"]}, role)
            else:
                res = self._send(name, args, role)
        except rn.PoweredOff:
            self._lost_power()
            return {"ok": False, "reason": POWERED_OFF, "message": "the battery is spent"}
        if res["ok"]:
            if name == "refill":
                self.pump.refill(args["volume_nl"], args["concentration_ug_per_ml"],
                                 args.get("partial", 0), args["aspirated_nl"])
                if not self.pump.switch and self.runner.ctrl.res.switch:
                    self.runner.empty_switch(self.t - self.pump.offset_ms, False)
            elif name == "prime":
                self.pump.prime(args["contents"])
            elif name == "port_injection":
                # SR-30: straight into the catheter, not from the reservoir: in the
                # delivered figures (mass at the tip; its volume is not the pump's)
                self._delivered(self.t, float(args["dose_ng"]), 0.0)
        return res

    # -- simulator events
    def sim_event(self, ev):
        a = ev.args
        if ev.name == "power_cut":
            if not self.powered and self._restart_at is not None:
                # a cut while the power is still off: the outage lasts to the later end
                self._restart_at = max(self._restart_at, self.t + a["duration"])
            elif self.powered:
                # The cut falls just after a durable write at its instant (what a cut
                # between writes loses is the littlefs power-cut sweep's subject,
                # tests/test_store_powercut.py): the recovered therapy clock restarts
                # from the cut, never before a time the trace already holds.
                now = self.t - self.pump.offset_ms
                self.runner.advance(now)
                self.runner.journal.sync()
                self.runner.power_cut(now)
                self.fs.power_cut()
                self.powered = False
                self._restart_at = self.t + a["duration"]
        elif ev.name in ("motor_fault", "occlusion"):
            self.pump.add_fault(self.t, a["duration"],
                                "stall" if ev.name == "motor_fault" else "occlusion")
        elif ev.name == "catheter_error":
            mm = int(round(a["actual_length_cm"] * 10))
            self.pump.set_dead_volume(dead_volume_nl(self.cfg.tubing_nl, mm))
            self.near_empty = self._near_empty_nl()
        elif ev.name in ("rtc_jump", "rtc_invalid"):
            if ev.name == "rtc_jump":
                self.rtc_delta += a["by"]
            self.rtc_valid = ev.name == "rtc_jump"
            if self.powered:
                self.runner.set_rtc(self.t - self.pump.offset_ms, self._rtc())

    def _power_on(self):
        if self.dead:
            return
        self.booting = True
        self.runner, _info = st.Store(self.fs).recover(self.pump, self._trace, self._rtc())
        self.booting = False
        self.pump.offset_ms = self.t - self.runner.now
        self.powered = True

    def _lost_power(self):
        # the battery is spent: the pump stays off for good
        self.powered = False
        self.dead = True

    # -- sampling
    def programmed_ug_per_day(self):
        return programmed_ug_per_day(self.runner.ctrl) if self.powered else 0.0

    def _sample(self):
        t = self.t
        self.patient.advance(t)
        p = self.patient.state()
        c = self.runner.ctrl
        r = c.res
        self.rows.append({
            "t_h": t / HOUR_MS,
            "state": c.state if self.powered else "OFF",
            "programmed_daily_dose_ug": self.programmed_ug_per_day(),
            "delivered_ug": self.hour_ng / 1000,
            "delivered_ml": self.hour_nl / 1e6,
            "reservoir_true_ml": self.pump.reservoir_nl / 1e6,
            "reservoir_est_ml": r.remaining_nl() / 1e6,
            "reservoir_pess_ml": r.pessimistic_nl() / 1e6,
            "reservoir_opt_ml": r.optimistic_nl() / 1e6,
            "csf_ng_per_ml": p["csf_ng_per_ml"],
            "effect_ng_per_ml": p["effect_ng_per_ml"],
            "mas": p["mas"],
            "withdrawal_risk": p["withdrawal_risk"],
            "sedation": p["sedation"],
            "battery_pct": self.pump.battery_pct(t),
        })
        if self.pump.dead and self.powered:
            # the battery ran out between strokes (a stopped pump, say): off for good
            self.runner.power_cut(t - self.pump.offset_ms)
            self._lost_power()
        self.hour_ng = self.hour_nl = 0.0
        if t and t % DAY_MS == 0 and len(self.day_rows) < len(self.day_ng):
            self._day_row()

    def _day_row(self):
        d = len(self.day_rows)
        self.day_rows.append({
            "day": d,
            "programmed_daily_dose_ug": self.programmed_ug_per_day(),
            "delivered_ug": self.day_ng[d] / 1000,
            "delivered_ml": self.day_nl[d] / 1e6,
            "reservoir_ml": self.pump.reservoir_nl / 1e6,
            "reservoir_est_ml": self.runner.ctrl.res.remaining_nl() / 1e6,
        })

    # -- the loop
    def _setup(self):
        sc = self.sc
        for name, args in (
            ("refill", {"aspirated_nl": 0, "volume_nl": sc.fill_volume_nl,
                        "concentration_ug_per_ml": sc.concentration_ug_per_ml}),
            ("prime", {"contents": "drug"}),
            ("program", sc.program),
        ):
            res = self.command(name, args)
            self.setup.append(_command_row(0, name, args, res))
        # an established therapy: the patient is at steady state on it and adapted,
        # if the pump could be programmed with it; else (or after implant) drug-naive
        dose_ug = 0.0
        if sc.established and all(row["accepted"] for row in self.setup):
            dose_ug = sc.program["daily_dose_ng"] / 1000
        self.patient = pt.Patient(self.params, 0, steady_daily_dose_ug=dose_ug)

    def run(self):
        sc = self.sc
        self._setup()
        events = sc.events
        ei = 0
        end = sc.duration_ms
        never = end + 1
        next_sample = 0
        pump = self.pump
        self.near_empty = self._near_empty_nl()
        while True:
            tw = never
            if self.powered:
                w = self.runner.next_wake()
                if w >= 0:
                    tw = w + pump.offset_ms
            tr = never if self._restart_at is None else self._restart_at
            te = events[ei].at_ms if ei < len(events) else never
            t = min(next_sample, tr, te)
            if tw < t and tw < end:
                if t > end or pump.reservoir_nl < self.near_empty:
                    t = tw  # one wake-up at a time (the switch may trip)
                else:
                    # every wake-up before the next sample or event in one advance:
                    # nothing outside the runner can change before then
                    self.t = t - 1
                    self._wake(t - 1 - pump.offset_ms)
                    continue
            if t > end or (t == end and t != next_sample):
                break  # the run covers [0, end); the last sample closes it
            self.t = t
            if t == next_sample:
                self._sample()
                next_sample = never if t == end else min(t + HOUR_MS, end)
            elif t == tw:
                self._wake(t - pump.offset_ms)
            elif t == tr:
                self._restart_at = None
                self._power_on()
            else:
                ev = events[ei]
                ei += 1
                if ev.is_command:
                    res = self.command(ev.name, ev.args)
                    self.commands.append(_command_row(t, ev.name, ev.given, res, ev.index))
                else:
                    self.sim_event(ev)
                    self.sim_events.append({"t_s": t // 1000, "event": ev.name,
                                            "args": ev.given, "index": ev.index})
        while len(self.day_rows) < len(self.day_ng):
            self._day_row()
        return Result(self)

    def _near_empty_nl(self):
        """True reservoir volume under which the engine steps one wake-up at a time:
        above it, no hour can empty the syringe. Per hour the strokes move at most
        the hard maximum daily dose at the weakest library concentration (every
        stroke counts against the caps, SR-3/SR-5, and caps lie within the hard
        limits) plus one dead volume of drug-free fluid (priming), with the
        largest stroke error and bias."""
        cfg = self.cfg
        weakest = min(PUMP_CONCENTRATIONS_UG_PER_ML)
        dead = max(cfg.dead_volume_nl, self.pump.path.dead_volume_nl)
        nl = cfg.max_daily_dose_ng * 1000 // weakest + dead + 2 * cfg.stroke_nl
        return nl * (1 + 3 * self.pump.sd + abs(self.pump.gain - 1)) * 1.25

    def _wake(self, now):
        runner = self.runner
        runner.advance(now)
        if not runner.powered:
            self._lost_power()
        elif self.pump.switch and not runner.ctrl.res.switch:
            runner.empty_switch(now, True)  # the syringe-empty switch tripped (SR-19)


def programmed_ug_per_day(ctrl):
    """The basal the controller is set to deliver, ug/day: the program's daily dose
    while RUNNING, the patency rate at the reservoir's concentration in MIN_RATE,
    else 0."""
    if ctrl.state == "RUNNING":
        return ctrl.daily_dose_ng() / 1000
    if ctrl.state == "MIN_RATE":
        return ctrl.min_rate_nl * ctrl.res.concentration / 1e6
    return 0.0


def _command_row(t, name, given, res, index=None):
    row = {"t_s": t // 1000, "command": name, "accepted": bool(res["ok"]),
           "reason": None if res["ok"] else res.get("reason"),
           "message": None if res["ok"] else res.get("message"),
           "args": given}
    if index is not None:
        row["event"] = index
    for key in ("allowed", "allowed_unit", "offer"):
        if key in res:
            row[key] = res[key]
    if "allowed" in res:
        row["allowed_text"] = units.human(res["allowed"], res.get("allowed_unit", ""))
    if res.get("offer"):
        row["offer_text"] = units.describe_offer(res["offer"])
    return row


def _low_reservoir_day(sim):
    """Day (from the start) the LOW_RESERVOIR alarm was first raised, else the day the
    controller projects it from the state at the end (SR-19), else None."""
    for a in sim.alarms:
        if a["code"] == "LOW_RESERVOIR":
            return a["t_s"] / 86400
    c = sim.runner.ctrl
    if not sim.powered:
        return None
    ms = c.res.days_to(c.cfg.low_reservoir_nl, c.planned_nl_per_day())
    return None if ms < 0 else (sim.t + ms) / DAY_MS


def max_window(times, masses, width):
    """Largest sum of ``masses`` whose ``times`` fall in one half-open window
    ``[s, s + width)`` (times ascending). Two pointers, O(n)."""
    best = 0.0
    acc = 0.0
    lo = 0
    for hi in range(len(times)):
        acc += masses[hi]
        while times[hi] - times[lo] >= width:
            acc -= masses[lo]
            lo += 1
        if acc > best:
            best = acc
    return best


class Result:
    """What a run produced: ``summary`` (the summary.json contract), ``rows``
    (hourly timeseries), ``setup`` (set-up command rows), ``patient`` (params)."""

    def __init__(self, sim):
        sc = sim.sc
        self.params = sim.params
        self.rows = sim.rows
        self.setup = sim.setup
        self.strokes = sim.runner.ctrl.stroke_seq
        self.projected_refill_day = _low_reservoir_day(sim)
        total_ng = sum(sim.day_ng)
        total_nl = sum(sim.day_nl)
        self.summary = {
            "scenario": sc.name,
            "duration_days": sc.duration_ms / DAY_MS,
            "seed": sc.seed,
            "patient": sim.params.name,
            "model_note": pt.MODEL_NOTE,
            "totals": {"delivered_ug": total_ng / 1000, "delivered_ml": total_nl / 1e6,
                       "strokes": self.strokes},
            "max_delivered_ug_any_24h": max_window(sim.del_t, sim.del_ng, DAY_MS) / 1000,
            "max_delivered_ug_any_1h": max_window(sim.del_t, sim.del_ng, HOUR_MS) / 1000,
            "daily": sim.day_rows,
            "alarms": sim.alarms,
            "commands": sim.commands,
            "sim_events": sim.sim_events,
            "setup": sim.setup,
            "origin": sc.origin,
            "concentration_ug_per_ml": sc.concentration_ug_per_ml,
        }
