"""Human amounts -> the command schema's canonical integers (host side, CPython).

The schema (``firmware/itb/commands.py``) lists, for each parameter, the unit
suffixes a host or scenario file may use with their factor to the canonical unit
(``daily_dose_ng`` accepts ``daily_dose_ug``: x1000). This module converts exactly
(``decimal``, never binary floats) and refuses what cannot be represented:

- ``canonical(command, key, value)`` -> ``(param_name, value)``: ``key`` is a
  parameter name (``step_pct``), its base plus a listed suffix (``dose_ug``), or,
  for time parameters, its base with a duration string (``every = "24h"``);
- ``duration_ms("2d 6h")`` parses durations (``ms s min h d`` parts, decimals
  allowed, an optional leading ``-`` when ``signed``).

Errors: ``UnitError`` (a ``ValueError``) with a message naming the key, the value
and what would be accepted. Range checks stay with the controller (SR-14: a value
of the right type and unit reaches it and is refused there with its reason); only
what cannot be converted (unknown unit, wrong type, not a whole canonical unit,
negative amount) is refused here.
"""

import re
from decimal import Decimal, InvalidOperation

from itb import commands as cmds

DURATION_UNITS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|min|h|d)")  # ASCII digits only


class UnitError(ValueError):
    """A value that cannot be converted to its canonical integer."""


def exact(value, factor, what, text=False):
    """``value`` (int or float; decimal text only with ``text``, for the parts of a
    duration) x ``factor`` as an exact int.

    Raises UnitError for a bool, a string, a non-number, a non-finite value or a
    result that is not a whole canonical unit (``0.00001 ug`` is not a whole ng)."""
    kinds = (int, float, str) if text else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise UnitError(f"{what} must be a number, got {value!r}")
    try:
        d = Decimal(str(value)) * factor
    except InvalidOperation:
        raise UnitError(f"{what} must be a number, got {value!r}") from None
    if not d.is_finite():
        raise UnitError(f"{what} must be a finite number, got {value!r}")
    if d != d.to_integral_value():
        raise UnitError(f"{what}={value} is not a whole number of the canonical unit")
    return int(d)


def duration_ms(text, signed=False, what="duration"):
    """``"90s"``, ``"15min"``, ``"6h"``, ``"2d"``, ``"2d 6h"``, ``"1.5h"`` -> ms (int).

    With ``signed``, a leading ``-`` is allowed (``"-23h"``). Raises UnitError."""
    if not isinstance(text, str):
        raise UnitError(f"{what} must be a string like \"6h\" or \"2d 6h\", got {text!r}")
    s = text.strip()
    sign = 1
    if signed and s.startswith("-"):
        sign, s = -1, s[1:].strip()
    pos, total, parts = 0, 0, 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            break
        total += exact(m[1], DURATION_UNITS[m[2]], what, text=True)
        parts += 1
        pos = m.end()
        while pos < len(s) and s[pos] == " ":
            pos += 1
    if not parts or pos != len(s):
        units = ", ".join(DURATION_UNITS)
        raise UnitError(f"{what} {text!r} is not a duration (numbers with units {units},"
                        " e.g. \"90s\", \"15min\", \"2d 6h\")")
    return sign * total


def base_name(spec):
    """A parameter's name without its canonical unit (``dose_ng`` -> ``dose``)."""
    return _suffixes(spec)[0]


def example_key(spec):
    """How a person would usually write a parameter: ``dose_ug = ...``,
    ``volume_ml = ...``, ``every = "24h"``, ``rate_ul_per_day = ...``, ``step_pct = ...``."""
    base = base_name(spec)
    preferred = {id(cmds.MASS_UNITS): "_ug = ...", id(cmds.VOLUME_UNITS): "_ml = ...",
                 id(cmds.RATE_UNITS): "_ul_per_day = ...", id(cmds.TIME_UNITS): ' = "24h"'}
    return base + preferred.get(id(spec["units"]), " = ...") if spec["units"] else \
        spec["name"] + " = ..."


def _suffixes(spec):
    """The base name of a parameter and its listed units ``{suffix: factor}``."""
    units = dict(spec["units"])
    if not units:
        return spec["name"], {}
    canon = spec["units"][0][0]
    return spec["name"][: -len(canon) - 1], units


def unit_names(command):
    """Every key ``canonical`` accepts for ``command`` (for help and error text)."""
    out = []
    for spec in cmds.params(command):
        base, units = _suffixes(spec)
        out.append(spec["name"])
        out += [f"{base}_{u}" for u in units if f"{base}_{u}" != spec["name"]]
        if spec["units"] is cmds.TIME_UNITS:
            out.append(base)
    return out


def canonical(command, key, value):
    """One argument of ``command`` -> ``(param_name, canonical value)``.

    Raises UnitError for an unknown key or unit, a wrong type, a negative amount
    (where the schema's range starts at 0) or an inexact conversion."""
    for spec in cmds.params(command):
        base, units = _suffixes(spec)
        what = f"{key}"
        if key == spec["name"]:
            return spec["name"], _plain(spec, value, what)
        if spec["units"] is cmds.TIME_UNITS and key == base:
            return spec["name"], _nonneg(spec, duration_ms(value, what=key), value, what)
        if key.startswith(base + "_") and key[len(base) + 1:] in units:
            factor = units[key[len(base) + 1:]]
            return spec["name"], _nonneg(spec, exact(value, factor, what), value, what)
    for spec in cmds.params(command):
        base, units = _suffixes(spec)
        if units and key.startswith(base + "_"):
            raise UnitError(f"unit {key[len(base) + 1:]!r} is not listed for {spec['name']}"
                            f" (use one of: {', '.join(base + '_' + u for u in units)})")
    known = ", ".join(unit_names(command)) or "none"
    raise UnitError(f"unknown argument {key!r} for {command} (known: {known})")


def _nonneg(spec, v, raw, what):
    if v < 0 and spec["lo"] >= 0:
        raise UnitError(f"{what}={raw} is negative")
    return v


def _plain(spec, value, what):
    kind = spec["kind"]
    if kind == cmds.STR:
        if not isinstance(value, str):
            raise UnitError(f"{what} must be a string, got {value!r}")
        return value
    if kind == cmds.STEPS:
        return value  # checked by the controller's schema (SR-24)
    if kind == cmds.MAP:
        if not isinstance(value, dict):
            raise UnitError(f"{what} must be a table, got {value!r}")
        return value
    if isinstance(value, bool) and spec["lo"] == 0 and spec["hi"] == 1:
        return int(value)  # a 0/1 flag (refill ``partial = true``)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnitError(f"{what} must be an integer, got {value!r}")
    return _nonneg(spec, value, value, what)


# the ``allowed_unit`` a refusal names -> (divisor, display unit)
_HUMAN = {"ng": (1000, "ug"), "ng_per_day": (1000, "ug/day"), "nl": (1_000_000, "mL"),
          "nl_per_day": (1_000_000, "mL/day"), "ms": (3_600_000, "h")}


def human(value, unit):
    """A canonical amount for people: ``human(130000, "ng_per_day")`` -> ``"130 ug/day"``;
    an unknown unit is shown as given."""
    if unit not in _HUMAN:
        return f"{value} {unit or ''}".strip()
    div, shown = _HUMAN[unit]
    return f"{value / div:.4g} {shown}"


def describe_offer(offer):
    """An offered plan (a refusal's ``offer``) in words."""
    return (f"{offer['command']} to {human(offer['target_daily_dose_ng'], 'ng_per_day')},"
            f" {offer['step_pct']} % every {human(offer['every_ms'], 'ms')}")
