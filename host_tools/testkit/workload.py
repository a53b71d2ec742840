"""Scripted therapy driven like the board app drives it, over a durable store.

``Harness`` boots a runner from a store on a file system (``itb.store.boot``),
wakes it at each ``next_wake()`` as the asyncio app does, sends two-phase
commands with fresh ids and keeps the truth the power-cut tests check against:
the trace (``lines``), the strokes the motor really made (``board.calls``), the
command in flight, the accepted prescription generations and ``durable``, the
number of trace lines up to the last successful sync: a power cut voids the
records after it (no stroke moved and no answer left after them: the intent of a
stroke and the result of a command are synced first).

``WEEK`` is the scripted week of the persistence issue: program, titration steps,
a bolus, patient boluses, a refill with a concentration change, stop and resume.
``constant_day`` builds the flash-wear workloads (benchmarks/flash_wear.py).
"""

from itb import store as st

SEC = 1000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
ML = 1000000


class Motor:
    """Counts real strokes; ``calls`` holds ``(t, n, volume_nl)``."""

    def __init__(self):
        self.calls = []

    def stroke(self, n, volume_nl, now):
        self.calls.append((now, n, volume_nl))
        return "ok"


class Harness:
    def __init__(self, fs, config=None):
        self.fs = fs
        self.board = Motor()
        self.lines = []
        self.runner, _ = st.boot(fs, self.board, config, self.lines.append)
        self.durable = 1  # trace lines up to the last successful sync (the config header)
        store = self.runner.journal
        sync = store.sync

        def synced():
            sync()
            self.durable = len(self.lines)

        store.sync = synced
        self.now = 0
        self.next_id = 1
        self.inflight = None  # (command, t) while a command is being handled
        self.gens = 0  # accepted prescription generations (truth)

    def command(self, name, args, role="clinician", cid=None):
        if cid is None:
            cid = self.next_id
            self.next_id += 1
        cmd = {"name": name, "id": cid, "role": role, "args": args}
        self.inflight = (cmd, self.now)
        res = self.runner.command(cmd, self.now)
        self.inflight = None
        if res["ok"] and name == "confirm" and not res.get("replayed"):
            self.gens += 1
        return res

    def confirm(self, name, args, role="clinician"):
        p = self.command("prepare", {"command": name, "args": args}, role)
        if not p["ok"]:
            return p
        return self.command("confirm", {"hash": p["hash"]}, role)

    def run_to(self, t):
        """Wake the runner at every wake-up due up to ``t``, as the app does (until
        the power fails during a stroke, if it does)."""
        while self.runner.powered:
            w = self.runner.next_wake()
            if w < 0 or w > t:
                break
            self.now = max(self.now, w)
            self.runner.advance(self.now)
        self.now = max(self.now, t)

    def run(self, script, until):
        """Run ``script`` (``[(t_ms, fn(harness)), ...]`` in time order) to ``until``
        (events after it are not run)."""
        for t, fn in script:
            if t > until:
                break
            self.run_to(t)
            fn(self)
        self.run_to(until)


def _ok(res):
    assert res["ok"], res
    return res


WEEK = [
    (0, lambda h: (_ok(h.confirm("refill", {"aspirated_nl": 0, "volume_nl": 20 * ML,
                                            "concentration_ug_per_ml": 2000})),
                   _ok(h.confirm("prime", {"contents": "drug"})),
                   _ok(h.confirm("program", {"daily_dose_ng": 100000, "origin": "spinal",
                                             "patient_bolus_ng": 10000,
                                             "patient_lockout_ms": HOUR,
                                             "patient_max_per_24h": 4})))),
    (DAY + HOUR, lambda h: _ok(h.confirm("titrate", {"target_daily_dose_ng": 140000,
                                                     "step_pct": 20, "every_ms": DAY}))),
    (2 * DAY + 5 * HOUR, lambda h: _ok(h.confirm("bolus", {"dose_ng": 20000,
                                                            "duration_ms": 10 * MIN}))),
    (3 * DAY + 2 * HOUR, lambda h: _ok(h.command("patient_bolus", {}, "patient"))),
    (3 * DAY + 4 * HOUR, lambda h: _ok(h.command("patient_bolus", {}, "patient"))),
    (4 * DAY, lambda h: (_ok(h.confirm("stop", {"reason": "procedure"})))),
    (4 * DAY + 2 * HOUR, lambda h: _ok(h.confirm("refill", {
        "aspirated_nl": 20 * ML - h.runner.ctrl.res.delivered_nl - 400000, "volume_nl": 20 * ML,
        "concentration_ug_per_ml": 1000}))),
    (4 * DAY + 3 * HOUR, lambda h: _ok(h.confirm("resume", {}))),
    (6 * DAY, lambda h: _ok(h.confirm("set_daily_dose", {"daily_dose_ng": 130000}))),
]
WEEK_END = 7 * DAY


def constant_day(daily_dose_ng, conc, patient_boluses, days=1):
    """A script: fill at ``conc``, program ``daily_dose_ng`` with patient boluses of
    the drug library's maximum allowed count, and press it each time it is allowed
    (the flash-wear workloads)."""
    bolus_ng = 100000 if patient_boluses else 0
    script = [(0, lambda h: (
        _ok(h.confirm("refill", {"aspirated_nl": 0, "volume_nl": 20 * ML,
                                 "concentration_ug_per_ml": conc})),
        _ok(h.confirm("prime", {"contents": "drug"})),
        _ok(h.confirm("program", {"daily_dose_ng": daily_dose_ng, "origin": "spinal",
                                  "patient_bolus_ng": bolus_ng,
                                  "patient_lockout_ms": HOUR if patient_boluses else 0,
                                  "patient_max_per_24h": patient_boluses}))))]
    for d in range(days):
        for i in range(patient_boluses):
            script.append((d * DAY + (i + 1) * DAY // (patient_boluses + 1),
                           lambda h: h.command("patient_bolus", {}, "patient")))
    return script
