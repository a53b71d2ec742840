"""The physical pump of the simulator: the truth the controller only estimates.

``Pump`` is a runner board (``stroke(n, volume_nl, now) -> outcome``). It keeps
what the controller cannot see:

- **stroke volume**: nominal x (1 + bias) x (1 + e), e ~ Normal(0, sd) clipped to
  +-3 sd (symmetric, so the mean stays exactly nominal without a bias). Default
  sd = 3.2 %, read from the Prometra II valve-gated accuracy of 96.8 %
  (ITB_REFERENCE "Implanted pumps"); a systematic bias only through an explicit
  ``stroke_bias_pct``. Volumes reach the fluid path in whole nL with the rounding
  remainder carried to the next stroke (no drift);
- **the true reservoir** (volume and a well-mixed concentration) and the
  **syringe-empty switch**, which trips when a stroke takes the last fluid (that
  stroke moves only what was left); the engine then tells the runner;
- **the true fluid path** (``itb.fluidpath.FluidPath``, the controller's own FIFO,
  here with the true dead volume): what leaves the catheter tip is what the patient
  gets;
- **faults** in time windows: a motor fault makes strokes ``stall`` (nothing
  moves); an occlusion makes them report ``occlusion`` (nothing flows; the model
  keeps no pressure, so no bolus follows its release);
- **battery**: an energy budget of ``battery_life_days`` at 100 strokes/day, half
  spent by the electronics over time and half by the strokes; when it is spent
  every stroke meets a ``power_cut`` (the engine keeps the pump off for good).

Times: ``now`` is the controller's therapy clock; ``offset_ms`` (set by the
engine across outages) maps it to simulation time. Deliveries go to
``on_delivery(t_ms, mass_ng, volume_nl)`` with float mass and volume.
"""

from itb.fluidpath import FluidPath

STROKES_PER_DAY_RATED = 100  # battery rating: life at 100 strokes/day
DAY_MS = 86_400_000


class Pump:
    def __init__(self, stroke_error_pct, stroke_bias_pct, dead_volume_nl, rng,
                 battery_life_days, on_delivery):
        self.sd = stroke_error_pct / 100.0
        self.gain = 1.0 + stroke_bias_pct / 100.0
        self.rng = rng
        self.on_delivery = on_delivery
        self.offset_ms = 0
        self.reservoir_nl = 0.0
        self.reservoir_conc = 0.0
        self.path = FluidPath(int(dead_volume_nl), 0)
        self.carry_nl = 0.0
        self.switch = False  # syringe-empty switch tripped
        self.faults = []  # [start_ms, end_ms, outcome] in simulation time
        # energy budget in "days at the rated stroke rate"; each half as described
        self.battery_days = float(battery_life_days)
        self.battery_left = float(battery_life_days)
        self.battery_t = 0
        self.dead = False

    # -- the board interface
    def stroke(self, n, volume_nl, now):
        t = now + self.offset_ms
        self._drain(t, 1)
        if self.dead:
            return "power_cut"
        for start, end, outcome in self.faults:
            if start <= t < end:
                return outcome
        if self.switch:
            return "stall"  # the plunger is at its stop
        e = self.rng.gauss(0.0, self.sd) if self.sd > 0 else 0.0
        lim = 3 * self.sd
        e = lim if e > lim else (-lim if e < -lim else e)
        v = volume_nl * self.gain * (1.0 + e)
        if v >= self.reservoir_nl:
            v = self.reservoir_nl
            self.switch = True
        self.reservoir_nl -= v
        self._push(t, v)
        return "ok"

    def _push(self, t, v):
        whole = int(v + self.carry_nl)
        self.carry_nl += v - whole
        pg, _hi, _lo = self.path.push(whole, round(self.reservoir_conc))
        if whole:
            mass_ng = pg / 1000.0
            self.on_delivery(t, mass_ng, whole)

    # -- battery
    def _drain(self, t, strokes):
        if t > self.battery_t:
            self.battery_left -= 0.5 * (t - self.battery_t) / DAY_MS
            self.battery_t = t
        self.battery_left -= 0.5 * strokes / STROKES_PER_DAY_RATED
        if self.battery_left <= 0:
            self.dead = True

    def battery_pct(self, t):
        """Charge left (percent) at simulation time ``t``."""
        self._drain(t, 0)
        return max(0.0, 100.0 * self.battery_left / self.battery_days)

    # -- what the clinician does to the pump (applied when the controller accepted it)
    def refill(self, volume_nl, concentration, partial, aspirated_nl):
        """Aspirate (all, or ``aspirated_nl`` if partial) then inject; returns the
        volume really aspirated (nL)."""
        if partial:
            removed = min(float(aspirated_nl), self.reservoir_nl)
        else:
            removed = self.reservoir_nl
        keep = self.reservoir_nl - removed
        total = keep + volume_nl
        if total > 0:
            self.reservoir_conc = (keep * self.reservoir_conc + volume_nl * concentration) / total
        self.reservoir_nl = total
        self.switch = self.reservoir_nl <= 0
        return removed

    def prime(self, contents):
        """The fluid path now holds ``contents`` (drug: the reservoir's; saline or
        empty: no drug); the controller's priming strokes then push drug in."""
        self.path.fill(round(self.reservoir_conc) if contents == "drug" else 0)

    def set_dead_volume(self, dead_volume_nl):
        """The true dead volume differs from the programmed one: the difference is
        added (or removed) at the tip, holding the fluid found there."""
        p = self.path
        diff = int(dead_volume_nl) - p.dead_volume_nl
        if diff > 0:
            c = p.segs[0][1] if p.segs else round(self.reservoir_conc)
            p.segs.insert(0, [diff, c])
        while diff < 0 and p.segs:
            take = min(-diff, p.segs[0][0])
            p.segs[0][0] -= take
            if not p.segs[0][0]:
                p.segs.pop(0)
            diff += take
        p.dead_volume_nl = int(dead_volume_nl)

    def add_fault(self, start_ms, duration_ms, outcome):
        self.faults.append([start_ms, start_ms + duration_ms, outcome])
