"""Basal programs (continuous and flex) and titration/taper plans (SR-13, SR-24).

A basal program is a list of steps ``[[start_min_local, rate_ng_per_day], ...]``
starting at local minute 0: a continuous program is ``[[0, daily_dose_ng]]``. A
step's rate is the daily dose that step would deliver over 24 h; the program's
daily dose ``D`` (the quantity every cap compares, SR-3/8/9) is the mass it delivers
in 24 h.
"""

from itb.units import ceil_div

DAY_MIN = 1440


def continuous(daily_dose_ng):
    """Continuous program: ``[[0, daily_dose_ng]]``."""
    return [[0, daily_dose_ng]]


def _mass_x1440(steps):
    total = 0
    for i in range(len(steps)):
        end = steps[i + 1][0] if i + 1 < len(steps) else DAY_MIN
        total += steps[i][1] * (end - steps[i][0])
    return total


def daily_dose_up(steps):
    """Daily dose in ng/day, rounded up (caps and up-cap checks)."""
    if len(steps) == 1 and steps[0][0] == 0:
        return steps[0][1]  # continuous: exact, and asked on every wake-up
    return ceil_div(_mass_x1440(steps), DAY_MIN)


def daily_dose_down(steps):
    """Daily dose in ng/day, rounded down (down-cap checks; SR-24 average rate)."""
    if len(steps) == 1 and steps[0][0] == 0:
        return steps[0][1]
    return _mass_x1440(steps) // DAY_MIN


def peak_rate(steps):
    """Highest step rate, ng/day (SR-3 1 h default cap)."""
    best = 0
    for s in steps:
        if s[1] > best:
            best = s[1]
    return best


def rate_at(steps, local_min):
    """Rate in ng/day at local minute ``local_min`` (0..1439); ``None`` means local
    time is unknown and gives the 24 h average rate (SR-24)."""
    if local_min is None:
        return daily_dose_down(steps)
    rate = steps[0][1]
    for s in steps:
        if s[0] <= local_min:
            rate = s[1]
    return rate


def next_boundary_min(steps, local_min):
    """Minutes from ``local_min`` to the next step start (1..1440), or 0 if the
    program has a single step."""
    if len(steps) == 1:
        return 0
    for s in steps:
        if s[0] > local_min:
            return s[0] - local_min
    return DAY_MIN - local_min


def plan_doses(start_ng, target_ng, step_pct, up):
    """SR-13: the step doses of a titrate (``up`` true) or taper plan, from the
    dose in effect ``start_ng`` to ``target_ng``: each step is the previous dose x
    (100 +/- step_pct) / 100 in integer ng rounded toward the previous dose; the
    last step is the target itself. Returns a list of ints (first applies at start).
    Raises ValueError if the plan goes the wrong way or cannot progress."""
    if up and target_ng <= start_ng:
        raise ValueError("titration target must exceed the current dose")
    if not up and target_ng >= start_ng:
        raise ValueError("taper target must be below the current dose")
    out = []
    d = start_ng
    while True:
        if up:
            nxt = d * (100 + step_pct) // 100  # toward the previous dose: down
            if nxt >= target_ng:
                out.append(target_ng)
                return out
        else:
            nxt = ceil_div(d * (100 - step_pct), 100)  # toward the previous dose: up
            if nxt <= target_ng:
                out.append(target_ng)
                return out
        if nxt == d:
            raise ValueError("plan step rounds to no change")
        out.append(nxt)
        if len(out) > 400:
            raise ValueError("plan has too many steps")
        d = nxt
