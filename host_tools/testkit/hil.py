"""Hardware-in-the-loop: the property machine (``machine.py``) driving a board
through the protocol (``itbctl hil``; the virtual board in CI).

``BoardMachine`` keeps the rules and invariants of ``ControllerMachine`` and
changes only how they reach the controller: commands go over the link with
their roles and ids, time moves with the board's host-stepped test clock, motor
faults and the syringe-empty switch are injected (``inject``, dev builds), and
the RTC is set with ``time_sync``. The reference model reads the board's own
ledger (``log``), record by record, so it checks what the board did, not what
the host asked.

What a board cannot do over the protocol is left out and said so in the report:
power cuts and an invalid RTC (the virtual board's power cuts are tested by
``tests/test_link.py``; a bench cuts power by hand), and the checks that need the
controller's internal figures (mass conservation and the one-audit-record count
of SR-14, which the host property tests cover). Each example continues on the
same board (its history only grows), so hypothesis does not shrink: a failure is
reported with the steps that led to it.

Requirements: a dev build (test clock, fault injection), all three role keys,
and the board's whole ledger from its first record (a fresh state directory for
the virtual board).
"""

import json

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule, run_state_machine_as_test
from itb import commands as cmds
from itb import runner as rn
from itb.trace import encode

from host_tools import export as ex
from host_tools.link import ledger_records
from host_tools.testkit.machine import CONFIG, DT, OUTCOMES, ControllerMachine
from host_tools.testkit.model import HOUR, Model

INVARIANTS = ("caps_hold", "basal_changes_obey_titration_rules", "delivery_tracks_programme",
              "reservoir_rules", "refusals_change_nothing", "no_stroke_when_stopped",
              "trace_replays")
NOT_ON_A_BOARD = {
    "mass_is_conserved": "needs the controller's internal mass figures (host property tests)",
    "one audit record per refusal (SR-14)": "the audit ring is in the board's RAM (host"
                                            " property tests)",
    "power_cut": "a board cannot be power-cut over the protocol (tests/test_link.py, bench)",
    "invalid RTC": "time_sync sets a valid time only",
}
# status fields a refused command must leave as they were (SR-14)
THERAPY_FIELDS = ("state", "daily_dose_ng", "program", "plan", "caps_ng",
                  "reservoir_nl", "concentration_ug_per_ml", "min_rate_nl_per_day")


class BoardMachine(ControllerMachine):
    """``ControllerMachine`` over a link (``link.Board`` in ``board``, set by ``run``)."""

    board_link = None
    counts = None  # invariant name -> times checked
    first_failure = None

    def __init__(self):  # replaces ControllerMachine's in-memory set-up wholesale
        super(ControllerMachine, self).__init__()
        b = _Guarded(self.board_link)
        self.b = b
        self.lines = []
        self.refusals = []
        self.internal = []
        self.next_id = 0
        self.seq = 0
        records, res = b.export()
        self.cfg = res["cfg"]
        self.model = Model(self.cfg)
        self.lines = ex.to_trace(records, self.cfg) if records else []
        for line in self.lines:
            self.model.feed(json.loads(line))
        self.seq = records[-1][0] if records else 0
        self.t = b.call("test_clock", {"mode": "stepped"}, role="service")["t"]
        self.board_t = self.t

    # ------------------------------------------------------------------ plumbing
    def _pull(self):
        """Feed the model every ledger record the board wrote since the last pull."""
        chunks = []
        self.b.call("log", {"from_seq": self.seq + 1}, on_part=chunks.append)
        for seq, _rtc, rec in ledger_records(b"".join(chunks), self.seq):
            if seq != self.seq + 1:
                _fail(f"ledger gap: after seq {self.seq} came {seq}")
            self.seq = seq
            self.lines.append(encode(rec))
            self.model.feed(rec)

    def _step_to(self, t):
        if t > self.board_t:
            self.board_t = self.b.call("test_clock", {"mode": "stepped",
                                                      "advance_ms": t - self.board_t},
                                       role="service")["t"]

    def _status(self):
        return self.b.status(role="clinician")

    def _id(self):
        return self.b.new_id()

    def _send(self, cmd):
        if cmd["role"] not in cmds.ROLES:
            return None  # not expressible on the wire: the role byte names a known role
        self._step_to(self.t)
        before = {k: self._status()[k] for k in THERAPY_FIELDS}
        res = self.b.call(cmd["name"], cmd.get("args"), role=cmd["role"], cid=cmd["id"],
                          check=False, any_name=True)
        after = {k: self._status()[k] for k in THERAPY_FIELDS}
        self._pull()
        if res.get("reason") == "INTERNAL":
            self.internal.append(res)
        if not res["ok"] and res.get("reason") not in ("BAD_MESSAGE", "UNKNOWN_COMMAND"):
            self.refusals.append((before == after, 1, res.get("reason"), cmd))
        return res

    # ------------------------------------------------------------------ rules
    @initialize(conc=st.sampled_from([500, 1000, 2000]),
                dose_ug=st.sampled_from([50, 100, 200, 400, 800]),
                origin=st.sampled_from(["spinal", "cerebral", "paediatric"]),
                patient=st.booleans(), prime=st.sampled_from(["drug", "saline"]))
    def setup(self, conc, dose_ug, origin, patient, prime):
        """The set-up of ``ControllerMachine``; an example continuing on a board left
        stopped by the last one resumes it, and every example starts with an hour of
        delivery (so each one exercises strokes)."""
        ControllerMachine.setup(self, conc, dose_ug, origin, patient, prime)
        if self._status()["state"] != "RUNNING":
            self.single("post_scan_check")
            self.two_phase("resume", {"daily_dose_ng": 0})
        self.advance(HOUR)

    @rule(dt=DT)
    def advance(self, dt):
        self.t += dt
        self._step_to(self.t)
        self._pull()

    @rule(mode=OUTCOMES, count=st.integers(1, 40))
    def motor_fault(self, mode, count):
        self.b.call("inject", {"fault": mode, "count": count}, role="service")

    @rule(valid=st.booleans(), shift=st.sampled_from([0, -23 * HOUR, HOUR, 12 * HOUR]))
    def rtc(self, valid, shift):
        if valid:  # an invalid RTC cannot be set through the protocol
            self.b.call("time_sync", {"utc_ms": 1_800_000_000_000 + self.t + shift},
                        role="service")
            self._pull()

    @rule(on=st.booleans())
    def empty_switch(self, on):
        self._step_to(self.t)
        self.b.call("inject", {"fault": "ok", "count": 0, "switch": int(on)}, role="service")
        self.advance(1)  # the board polls its switch: let the runner see it

    @rule(go=st.integers(0, 2))
    def session_end(self, go):
        if go == 0:
            self.b.hello()  # a new session ends the last one
            self._pull()

    power_cut = None  # not over a protocol (see NOT_ON_A_BOARD)
    mass_is_conserved = None

    def teardown(self):
        """The board's ledger, as a trace, replays byte for byte on the host."""
        self._pull()
        again = rn.replay(self.lines)
        if again != self.lines:
            _fail("trace_replays: the board's ledger does not replay on the host's firmware")
        BoardMachine.counts["trace_replays"] += 1
        BoardMachine.counts["model_records"] = self.model.n_records


class _Guarded:
    """The link, with every failure recorded as the run's first failure."""

    def __init__(self, board):
        self.board = board

    def __getattr__(self, name):
        attr = getattr(self.board, name)
        if not callable(attr):
            return attr

        def guarded(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any link failure fails the run
                _fail(f"{name} failed: {type(e).__name__}: {e}")

        return guarded


def _fail(text):
    """Record the first failure (the engine re-runs a failing example for its
    report, on a board that has moved on since) and raise it."""
    BoardMachine.first_failure = BoardMachine.first_failure or text
    raise AssertionError(text)


def _counting(name):
    base = getattr(ControllerMachine, name)

    def check(self):
        BoardMachine.counts[name] += 1
        try:
            return base(self)
        except AssertionError as e:
            _fail(f"{name}: {e}")

    check.__doc__ = base.__doc__
    return check


for _name in INVARIANTS[:-1]:
    setattr(BoardMachine, _name, invariant()(_counting(_name)))


def run(board, examples=10, steps=30, say=print):
    """Run the property machine against ``board`` (a connected ``link.Board`` with
    every role key); returns ``{"passed", "examples", "invariants": {name:
    checks}, "failure": text|None, "not_checked": {...}}``."""
    if board.info is None:
        board.hello()
    BoardMachine.board_link = board
    BoardMachine.counts = dict.fromkeys(INVARIANTS, 0)
    BoardMachine.first_failure = None
    failure = None
    say(f"HIL: {examples} example(s) of up to {steps} steps on board {board.info.get('dev')}"
        f" (firmware {board.info.get('fw', '?')[:16]})")
    # Examples continue on the same board, so the engine must not replay or shrink
    # (it would see a board that has moved on): generate only, and report the
    # first failure as it happened.
    try:
        run_state_machine_as_test(BoardMachine, settings=settings(
            max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
            derandomize=False,  # (the ci profile derandomizes)
            phases=[Phase.generate], suppress_health_check=list(HealthCheck),
            print_blob=False, report_multiple_bugs=False))
    except Exception as e:  # noqa: BLE001 - reported, with its type, as the failure
        failure = BoardMachine.first_failure or f"{type(e).__name__}: {e}"
    counts = dict(BoardMachine.counts)
    for name in INVARIANTS:
        doc = (getattr(ControllerMachine, name, None).__doc__ or "").strip().split("\n")[0] \
            if name != "trace_replays" else "the board's ledger replays byte for byte"
        say(f"  {'ok  ' if failure is None else '    '}{name}: checked {counts[name]} times"
            f"  ({doc})")
    for what, why in NOT_ON_A_BOARD.items():
        say(f"  --  {what}: not checked on a board: {why}")
    say("HIL passed" if failure is None else f"HIL FAILED: {failure}")
    return {"passed": failure is None, "examples": examples, "invariants": counts,
            "failure": failure, "not_checked": NOT_ON_A_BOARD, "config": CONFIG}
