"""Gravimetric stroke calibration on the bench: the controller's ``calibration_run``
and ``set_calibration`` (service role, two-phase, UNPROGRAMMED only; ``ACCEPTS`` in
``controller.py``). Imported on first use, so a pump in use never loads it (heap).

- ``run``: strokes into a weighed vessel (``itbctl calibrate``). Each is a normal
  stroke: caps checked at acceptance and at each stroke (SR-5, SR-6), its intent
  durable before the motor moves (SR-26), its mass counted for the caps (SR-4), its
  volume taken from the reservoir (SR-19). A run names its measurement with an id the
  host chooses at random (found by the attacker, round 2: ids counted on the board
  were the same on every new store and every board, so another board's readings
  corrected this one): a new id starts a measurement, the id under way adds to it.
  The controller counts the measurement's strokes that ended ``ok`` and those that
  did not (``Controller.calibration``: ``[ok, not ok, id]``, kept in checkpoints so
  a recovery replays the commands after one alike; a reset ends a measurement, and
  so do a refill and a program, which also cancels the run). The interval applies
  between strokes: a run of one stroke has none.
- ``correct``: the measured mean stroke (nL) and the half-width of its confidence
  interval. It must be of the strokes this board just made: the measurement's id
  quoted (found by the attacker: readings of an earlier run passed once any run of
  as many strokes was made, and corrected the factor again), every stroke of it ended
  ``ok``, as many as were weighed, none under way; at most
  ``MAX_ERROR_PCT`` off the nominal stroke and known to ``MAX_CI_PCT``. Applied, it
  becomes a ``calibration`` event: the runner logs it and calls
  ``board.calibrate(stroke_nl, measured_nl)``, which scales the board's
  volume-to-motion factor (the Pico's ``steps_per_ml``). The controller's
  ``stroke_nl`` and every dose stay as they are: the strokes become what they were
  said to be. It ends the measurement, so one measurement corrects the factor once
  (a second correction needs a new run at the new factor).

Reading of SR-19 ("tol ... narrowed by calibration"): the volume accuracy is not
narrowed. A bench run of tens of strokes over minutes says nothing of drift over the
months between refills, which the 14.5 % covers; the wider tolerance is the safer
reading (an earlier low-reservoir alarm).
"""

from itb.commands import BIG, INT, TIME_UNITS, VOLUME_UNITS, _p
from itb.controller import DAY_MS, HOUR_MS, Refusal
from itb.drugs import is_pump_concentration
from itb.scheduler import Overlay

# the commands' parameters (``commands.params``; their roles and docs are in COMMANDS)
PARAMS = {
    "calibration_run": (
        _p("strokes", INT, 1, 100, doc="strokes to make into the weighed vessel"),
        _p("interval_ms", INT, 1000, HOUR_MS, 20000, TIME_UNITS, doc="time between strokes"),
        _p("measurement", INT, 1, BIG, doc="the host's random id: a new one starts a"
           " measurement, the one under way adds to it"),
    ),
    "set_calibration": (
        _p("measurement", INT, 1, BIG, doc="the id of the measurement weighed"),
        _p("strokes", INT, 10, 1000, doc="strokes weighed: every stroke of the measurement"),
        _p("measured_nl", INT, 1, BIG, None, VOLUME_UNITS, doc="mean volume of one stroke"),
        _p("ci_nl", INT, 0, BIG, None, VOLUME_UNITS, doc="half-width of its confidence interval"),
    ),
}

# A mean stroke more than 25 % off its nominal volume is a fault of the set-up (air, a
# leak, the wrong syringe), not a factor to correct: fix the geometry (board.json). A
# correction must be known to 5 % (confidence half-width over the mean), well inside
# the 14.5 % volume accuracy (SR-19).
MAX_ERROR_PCT = 25
MAX_CI_PCT = 5


def limits_broken(stroke_nl, measured_nl, ci_nl):
    """The limits a correction breaks, as ``[(reason, message), ...]`` (empty: none):
    ``set_calibration`` refuses with the first; ``itbctl calibrate`` shows them all
    before anything is sent (one check, two users)."""
    out = []
    if abs(measured_nl - stroke_nl) * 100 > MAX_ERROR_PCT * stroke_nl:
        out.append(("CALIBRATION_RANGE", "%d nL is more than %d %% off the %d nL stroke:"
                    " check the set-up (air, leaks, the syringe in board.json)"
                    % (measured_nl, MAX_ERROR_PCT, stroke_nl)))
    if ci_nl * 100 > MAX_CI_PCT * measured_nl:
        out.append(("CALIBRATION_IMPRECISE", "the confidence interval (+-%d nL) is wider than"
                    " %d %% of the mean: weigh more strokes, or use a finer balance"
                    % (ci_nl, MAX_CI_PCT)))
    return out


def run(ctrl, args, now, apply):
    """``calibration_run``: ``{"effect": ...}`` or Refusal (SR-14)."""
    cfg = ctrl.cfg
    res = ctrl.res
    n = args["strokes"]
    interval = args["interval_ms"]
    _check_idle(ctrl)
    if n > 1 and interval < cfg.min_stroke_interval_ms:
        raise Refusal("OUT_OF_RANGE", "strokes closer than the maximum rate allows (SR-2)",
                      cfg.min_stroke_interval_ms, unit="ms")
    if not is_pump_concentration(res.concentration) or res.remaining_nl() <= 0:
        raise Refusal("NO_DRUG", "record the syringe's fill (refill) before a calibration run")
    room = res.remaining_nl() // cfg.stroke_nl
    if n > room:
        raise Refusal("NO_DRUG", "the reservoir holds %d strokes" % room, room)
    horizon = (n - 1) * interval + 1
    trial = ctrl._overlay_trial("calibration", n, interval, now)
    effect = ctrl._basal_effect(trial, now, horizon if horizon > DAY_MS else DAY_MS)
    effect["calibration_strokes"] = n
    effect["calibration_nl"] = n * cfg.stroke_nl
    effect["duration_ms"] = (n - 1) * interval
    mid = args["measurement"]
    add = mid == ctrl.calibration[2]
    effect["measured_strokes"] = ctrl.calibration[0] if add else 0
    effect["measurement"] = mid
    if apply:
        ctrl.overlays.append(Overlay("calibration", now, n, interval))
        if not add:
            ctrl.calibration = [0, 0, mid]
    return {"effect": effect}


def _check_idle(ctrl):
    if ctrl.overlays:
        if ctrl.overlays[0].source == "calibration":
            raise Refusal("CALIBRATION_RUNNING", "the calibration run has not ended")
        raise Refusal("BOLUS_ACTIVE", "priming is in progress")


def correct(ctrl, args, now, apply):
    """``set_calibration``: ``{"effect": ...}`` or Refusal (SR-14)."""
    n = args["strokes"]
    measured = args["measured_nl"]
    ok, bad, mid = ctrl.calibration
    _check_idle(ctrl)
    if args["measurement"] != mid:
        raise Refusal("NO_MEASUREMENT", "the readings are of measurement %d; the board's is %s"
                      " (a new run, a refill, a reset or a correction since): weigh a new run"
                      % (args["measurement"], mid or "none"))
    if bad:
        raise Refusal("NO_MEASUREMENT", "%d stroke(s) of the measurement did not complete ok:"
                      " make a new run" % bad)
    if ok != n:
        raise Refusal("NO_MEASUREMENT", "the board made %d calibration strokes since the"
                      " measurement began, not %d" % (ok, n), ok)
    nominal = ctrl.cfg.stroke_nl
    broken = limits_broken(nominal, measured, args["ci_nl"])
    if broken:
        raise Refusal(broken[0][0], broken[0][1])
    effect = {"stroke_nl": nominal, "measured_nl": measured, "ci_nl": args["ci_nl"],
              "strokes": n, "measurement": mid,
              "error_ppm": (measured - nominal) * 1000000 // nominal}
    if apply:
        ctrl.calibration = [0, 0, 0]
        ctrl._pending_events.append({"k": "calibration", "stroke_nl": nominal,
                                     "measured_nl": measured, "ci_nl": args["ci_nl"],
                                     "strokes": n})
    return {"effect": effect}
