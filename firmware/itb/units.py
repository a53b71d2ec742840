"""Integer units and conversions shared by every dosing module (SR-1, SR-22).

Every dosing quantity is an integer in a fixed unit, named in the variable:

- mass: ``_ng`` (nanograms); exact masses of fluid volumes: ``_pg`` (picograms).
  1 nL at 1 µg/mL holds exactly 1 pg, so ``volume_nl * concentration_ug_per_ml``
  is an exact mass in pg and needs no division.
- volume: ``_nl`` (nanolitres); concentration: ``_ug_per_ml`` (drug library values).
- time: ``_ms`` on the therapy clock (monotonic milliseconds, SR-23).
- daily doses: ng/day, entered with 0.1 µg/day (= 100 ng/day) resolution (SR-1).

No floats and no true division anywhere in ``itb``: RP2040 floats are 32-bit.
Rounding is always explicit (``ceil_div`` for upper bounds, ``//`` for lower ones).
"""

SECOND_MS = 1000
MINUTE_MS = 60000
HOUR_MS = 3600000
DAY_MS = 86400000

NG_PER_UG = 1000
PG_PER_NG = 1000
NL_PER_UL = 1000
NL_PER_ML = 1000000

DOSE_RESOLUTION_NG = 100  # SR-1: 0.1 µg/day

# SR-22: implanted catheter volume 0.0026 mL/cm = 260 nL/mm (Prometra II IFU).
CATHETER_NL_PER_MM = 260
# SR-22: pump tubing volume 0.140 mL (TGA recall RC-2017-RN-00065-1: 0.199 was the mistake).
TUBING_NL_DEFAULT = 140000


def ceil_div(a, b):
    """Integer division rounded towards +infinity (``b`` > 0)."""
    return -((-a) // b)


def mass_pg(volume_nl, concentration_ug_per_ml):
    """Exact drug mass in pg of ``volume_nl`` nL at ``concentration_ug_per_ml``."""
    return volume_nl * concentration_ug_per_ml


def mass_ng_up(volume_nl, concentration_ug_per_ml):
    """Drug mass in ng, rounded up (for cap counting, SR-4)."""
    return ceil_div(volume_nl * concentration_ug_per_ml, PG_PER_NG)


def mass_ng_down(volume_nl, concentration_ug_per_ml):
    """Drug mass in ng, rounded down (for withdrawal tracking)."""
    return volume_nl * concentration_ug_per_ml // PG_PER_NG


def volume_nl_up(mass_ng, concentration_ug_per_ml):
    """Volume in nL holding ``mass_ng`` at the concentration, rounded up."""
    return ceil_div(mass_ng * PG_PER_NG, concentration_ug_per_ml)


def dead_volume_nl(tubing_nl, catheter_length_mm):
    """SR-22: dead volume = pump tubing + implanted catheter length x 0.0026 mL/cm.

    ``tubing_nl`` in nL, ``catheter_length_mm`` in mm; returns nL. The one source of
    this constant: priming, bridging and the fluid path all call this function.
    Example (ITB_REFERENCE worked value 5): 140000 nL + 900 mm -> 374000 nL.
    """
    return tubing_nl + catheter_length_mm * CATHETER_NL_PER_MM


def check_int(name, value, lo, hi):
    """SR-1: raise ValueError unless ``value`` is an int (not bool) in [lo, hi].

    Used before any value is packed into a record or frame: MicroPython's
    ``struct.pack`` wraps silently where CPython raises.
    """
    if type(value) is not int:
        raise ValueError(name + " must be an integer")
    if value < lo or value > hi:
        raise ValueError("%s=%d outside [%d, %d]" % (name, value, lo, hi))
    return value
