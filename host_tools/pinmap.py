"""The dev board's pin map (``hardware/pins.toml``): check it, generate from it, draw it.

``hardware/pins.toml`` is the single source of truth for which GPIO does what. This
module

- checks it against what the RP2040 / RP2350A and the Pico / Pico 2 can do
  (:func:`validate`: a list of problems, each naming the table, pin and field);
- generates ``firmware/board/pins.py`` (:func:`pins_py`) and the pin table of
  ``hardware/README.md`` (:func:`markdown_table`);
- checks that ``hardware/diagram.json`` (Wokwi) wires the same GPIOs
  (:func:`check_diagram`);
- draws the wiring as an SVG (:func:`render`).

Command line (``python -m host_tools.pinmap --help``): ``--check`` (the default)
exits 1 naming every problem and every stale generated file; ``--write`` regenerates
them; ``--markdown`` prints the table; ``--render FILE.svg`` draws the wiring.

The pin map is plain data from ``tomllib`` (dicts, lists, str, int), not a class: the
checks must also take broken maps, which is what the tests feed them.
"""

import argparse
import csv
import difflib
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
# Paths below are relative to a repository root (``--root``: tests use a copy).
PINS_TOML = Path("hardware/pins.toml")
PINS_PY = Path("firmware/board/pins.py")
README = Path("hardware/README.md")
DIAGRAM = Path("hardware/diagram.json")
PARTS_CSV = Path("hardware/parts.csv")

# --- What the chip and the board can do -------------------------------------------------

# RP2040 datasheet, 1.4.3 "GPIO Functions": bank 0 has GPIO0-GPIO29. The RP2350A (Pico 2)
# has the same 30 GPIOs with the same I2C, PWM and ADC assignment (RP2350 datasheet,
# "Function Select").
GPIO_COUNT = 30

# Raspberry Pi Pico datasheet, "Pico Pinout" (GPIOs used for internal board functions;
# the Pico 2 datasheet: the same): these GPIOs are wired on the board and not brought
# out to the header; each may be used only for the board's purpose. The header therefore
# exposes GP0-GP22 and GP26-GP28.
BOARD_PART = "Pico"


class BoardPin(NamedTuple):
    purpose: str
    functions: tuple  # functions that serve the purpose
    direction: str


BOARD_PINS = {
    23: BoardPin("SMPS power-save control", ("sio",), "out"),
    24: BoardPin("VBUS sense (high while USB power is present)", ("sio",), "in"),
    25: BoardPin("on-board LED", ("sio", "pwm"), "out"),
    29: BoardPin("VSYS/3 sense (ADC3 through the Pico's 200k/100k divider)", ("adc",), "analog"),
}
HEADER_GPIOS = tuple(g for g in range(GPIO_COUNT) if g not in BOARD_PINS)

# RP2040 datasheet, 4.9 "ADC and Temperature Sensor": inputs 0-3 are GPIO26-GPIO29
# (input 4 is the temperature sensor).
ADC_GPIOS = {26: 0, 27: 1, 28: 2, 29: 3}

# RP2040 datasheet, 1.4.3, function-select table, column F3: I2C repeats every four GPIOs
# (n % 4 = 0: I2C0 SDA, 1: I2C0 SCL, 2: I2C1 SDA, 3: I2C1 SCL); MicroPython checks the
# same rule (ports/rp2/machine_i2c.h, IS_VALID_SDA / IS_VALID_SCL). The Pico's pinout card
# leaves the I2C labels off GP22 and GP28, but the chip has them.
I2C_GPIOS = {
    "i2c0_sda": (0, 4, 8, 12, 16, 20, 24, 28),
    "i2c0_scl": (1, 5, 9, 13, 17, 21, 25, 29),
    "i2c1_sda": (2, 6, 10, 14, 18, 22, 26),
    "i2c1_scl": (3, 7, 11, 15, 19, 23, 27),
}
# Every GPIO can be SIO, either PIO block, or a PWM output (RP2040 datasheet, 1.4.3, F4-F7).
ANY_GPIO_FUNCTIONS = ("sio", "pio", "pwm")
FUNCTIONS = ANY_GPIO_FUNCTIONS + ("adc",) + tuple(I2C_GPIOS)

DIRECTIONS = ("in", "out", "io", "analog")
PULLS = ("up", "down", "none", "external_up")
ACTIVES = ("low", "high")
PIN_FIELDS = ("gpio", "function", "direction", "pull", "active", "part", "purpose")
BUS_FIELDS = ("id", "freq_hz", "sda", "scl")
ANALOG_FIELDS = ("top_ohm", "bottom_ohm")
TOP_KEYS = ("board", "pins", "bus", "analog", "wokwi")
NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")
I2C_MAX_HZ = 1_000_000  # RP2040 datasheet 4.3: standard, fast and fast-mode plus


def pwm_channel(gpio):
    """PWM output of ``gpio``: ``(slice 0-7, "A" | "B")`` (RP2040 datasheet 4.5 "PWM": slice
    ``(gpio >> 1) & 7``, channel A on even GPIOs, B on odd). The two channels of a slice
    share its frequency; two GPIOs on the same slice and channel carry the same signal."""
    return (gpio >> 1) & 7, "AB"[gpio & 1]


class PinMapError(Exception):
    """A hardware file is missing or unreadable (pins.toml, diagram.json, parts.csv,
    README.md), or the README has lost its pin-table markers."""


def _read(path):
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PinMapError(f"{path}: {exc}") from exc


# --- Loading ---------------------------------------------------------------------------

def load(path=None):
    """The pin map from ``path`` (default: this checkout's ``hardware/pins.toml``) as
    plain TOML data. PinMapError names the file when it is missing or not TOML."""
    path = Path(path or REPO / PINS_TOML)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PinMapError(f"{path}: {exc}") from exc


def load_diagram(path=None):
    """The Wokwi diagram (``hardware/diagram.json``) as JSON data; PinMapError names
    the file when it is missing or not JSON."""
    path = Path(path or REPO / DIAGRAM)
    try:
        return json.loads(_read(path))
    except ValueError as exc:
        raise PinMapError(f"{path}: {exc}") from exc


def _table(data, key):
    value = data.get(key, {}) if isinstance(data, dict) else {}
    return value if isinstance(value, dict) else {}


def _pins(pinmap):
    """``{name: pin table}`` for the entries that are tables (others are reported)."""
    return {n: p for n, p in _table(pinmap, "pins").items() if isinstance(p, dict)}


def _gpio(pin):
    """The pin's GPIO number if it is a valid one, else None (reported elsewhere)."""
    g = pin.get("gpio")
    ok = isinstance(g, int) and not isinstance(g, bool) and 0 <= g < GPIO_COUNT
    return g if ok else None


# --- Validation: each check returns a list of problems ---------------------------------

def check_structure(pinmap):
    """Top-level tables, pin names (UPPER_SNAKE: they become Python names) and every
    pin field present with an allowed value."""
    problems = [f"{key}: unknown table (tables: {', '.join(TOP_KEYS)})"
                for key in pinmap if key not in TOP_KEYS]
    if not isinstance(pinmap.get("board"), str):
        problems.append("board: missing (a string naming the board)")
    pins = pinmap.get("pins")
    if not isinstance(pins, dict) or not pins:
        return problems + ["pins: missing or empty (one [pins.NAME] table per pin)"]
    for name, pin in pins.items():
        if not NAME.match(name):
            problems.append(f"pins.{name}: name must be UPPER_SNAKE_CASE (a Python name)")
        if not isinstance(pin, dict):
            problems.append(f"pins.{name}: not a table")
            continue
        problems += _check_pin_fields(name, pin)
    return problems


def _check_pin_fields(name, pin):
    problems = [f"pins.{name}.{key}: unknown field (fields: {', '.join(PIN_FIELDS)})"
                for key in pin if key not in PIN_FIELDS]
    allowed = {"function": FUNCTIONS, "direction": DIRECTIONS, "pull": PULLS,
               "active": ACTIVES}
    for field in PIN_FIELDS:
        where = f"pins.{name}.{field}"
        if field not in pin:
            problems.append(f"{where}: missing")
        elif field == "gpio":
            if _gpio(pin) is None:
                problems.append(f"{where}: {pin[field]!r} is not a GPIO of the RP2040 "
                                f"(an integer 0-{GPIO_COUNT - 1})")
        elif field in allowed:
            if pin[field] not in allowed[field]:
                problems.append(f"{where}: {pin[field]!r} is not one of "
                                f"{', '.join(allowed[field])}")
        elif not isinstance(pin[field], str) or not pin[field].strip():
            problems.append(f"{where}: must be a non-empty string")
        elif not pin[field].isprintable():
            # part and purpose reach pins.py as comments: a newline would be code
            problems.append(f"{where}: must be one line of printable text")
    return problems


# What the firmware (firmware/board/rp2.py and pio_step.py) needs of each pin: a map
# the chip accepts but the adapter cannot drive safely is refused too (found by the
# attacker: EN_N active high with a pull-down would enable the motor in reset).
# name -> {field: required value}
REQUIRED = {
    "STEP": {"function": "pio", "direction": "out", "active": "high"},
    "DIR": {"function": "sio", "direction": "out"},
    "EN_N": {"function": "sio", "direction": "out", "active": "low", "pull": "external_up"},
    "DIAG": {"function": "pio", "direction": "in", "active": "high"},
    "HX711_DOUT": {"function": "sio", "direction": "in"},
    "HX711_SCK": {"function": "sio", "direction": "out"},
    "EMPTY_SWITCH": {"function": "sio", "direction": "in"},
    "BTN_ACK": {"function": "sio", "direction": "in"},
    "BTN_BOLUS": {"function": "sio", "direction": "in"},
    "BTN_PROVISION": {"function": "sio", "direction": "in"},
    "BUZZER": {"function": "pwm", "direction": "out"},
    "HEARTBEAT": {"function": "sio", "direction": "out"},
    "LED": {"function": "pwm", "direction": "out"},
    "BATTERY_ADC": {"function": "adc"},
    "VSYS_ADC": {"function": "adc"},
}


def check_firmware_needs(pinmap):
    """Every pin the board adapter uses exists with the function, direction, active
    level and pull it drives it with (``REQUIRED``)."""
    pins = _pins(pinmap)
    problems = []
    for name, need in REQUIRED.items():
        pin = pins.get(name)
        if not isinstance(pin, dict):
            problems.append(f"pins.{name}: missing (firmware/board/rp2.py uses it)")
            continue
        for field, value in need.items():
            if pin.get(field) != value:
                problems.append(f"pins.{name}.{field}: must be {value!r} (the firmware "
                                f"drives it so), not {pin.get(field)!r}")
    return problems


def check_unique_gpios(pinmap):
    """No GPIO used by two pins."""
    problems, owner = [], {}
    for name, pin in _pins(pinmap).items():
        gpio = _gpio(pin)
        if gpio is None:
            continue
        if gpio in owner:
            problems.append(f"pins.{name}.gpio: GP{gpio} is already used by pins.{owner[gpio]}")
        else:
            owner[gpio] = name
    return problems


def check_functions(pinmap):
    """Each pin's function is one its GPIO has (ADC only on GP26-GP29, I2C per the
    function-select table), and function, direction and pull agree: adc is analog
    with no pull, I2C is io with external pull-ups, pwm is an output."""
    problems = []
    for name, pin in _pins(pinmap).items():
        gpio, function = _gpio(pin), pin.get("function")
        where = f"pins.{name}"
        if gpio is not None and function == "adc" and gpio not in ADC_GPIOS:
            problems.append(f"{where}.function: adc is not available on GP{gpio} "
                            f"(ADC inputs: {_gp_list(ADC_GPIOS)})")
        if gpio is not None and function in I2C_GPIOS and gpio not in I2C_GPIOS[function]:
            problems.append(f"{where}.function: {function} is not available on GP{gpio} "
                            f"({function}: {_gp_list(I2C_GPIOS[function])})")
        problems += _check_consistency(where, pin)
    return problems


def _check_consistency(where, pin):
    function, direction, pull = pin.get("function"), pin.get("direction"), pin.get("pull")
    problems = []
    if (function == "adc") != (direction == "analog") and function in FUNCTIONS \
            and direction in DIRECTIONS:
        problems.append(f"{where}.direction: {direction!r} with function {function!r} "
                        "(an adc pin, and only an adc pin, is analog)")
    if function == "adc" and pull not in ("none", None):
        problems.append(f"{where}.pull: {pull!r} on an adc pin (a pull loads the input: none)")
    if function in I2C_GPIOS and direction in DIRECTIONS and direction != "io":
        problems.append(f"{where}.direction: {direction!r} for {function} (I2C lines are io)")
    # I2C needs pull-ups on the bus; the RP2040's own pulls (50-80 kOhm, datasheet "IO
    # Electrical Characteristics") are too weak for it.
    if function in I2C_GPIOS and pull in PULLS and pull != "external_up":
        problems.append(f"{where}.pull: {pull!r} for {function} (I2C needs pull-up "
                        "resistors on the bus: external_up)")
    if function == "pwm" and direction in DIRECTIONS and direction != "out":
        problems.append(f"{where}.direction: {direction!r} for pwm (a PWM pin is an out)")
    return problems


def check_board_pins(pinmap):
    """GP23, GP24, GP25 and GP29 are wired on the Pico and not on the header: a pin map
    entry on one of them must be that purpose (part "Pico", its function and direction);
    part "Pico" is only for those GPIOs."""
    problems = []
    for name, pin in _pins(pinmap).items():
        gpio = _gpio(pin)
        if gpio is None:
            continue
        board = BOARD_PINS.get(gpio)
        if board is None:
            if pin.get("part") == BOARD_PART:
                problems.append(f"pins.{name}.part: {BOARD_PART!r} is for the board's own "
                                f"circuits ({_gp_list(BOARD_PINS)}); GP{gpio} is a header pin")
            continue
        fits = (pin.get("part") == BOARD_PART and pin.get("function") in board.functions
                and pin.get("direction") == board.direction)
        if not fits:
            problems.append(
                f"pins.{name}.gpio: GP{gpio} is the Pico's {board.purpose}, not on the "
                f"header; it may be used only for that (part {BOARD_PART!r}, function "
                f"{' or '.join(board.functions)}, direction {board.direction})")
    return problems


def check_pwm(pinmap):
    """No two PWM pins on the same slice and channel (they would carry one signal)."""
    problems, owner = [], {}
    for name, pin in _pins(pinmap).items():
        gpio = _gpio(pin)
        if gpio is None or pin.get("function") != "pwm":
            continue
        channel = pwm_channel(gpio)
        if channel in owner:
            other, other_gpio = owner[channel]
            problems.append(
                f"pins.{name}.function: PWM slice {channel[0]} channel {channel[1]} (GP{gpio}) "
                f"is already used by pins.{other} (GP{other_gpio}); one slice channel drives "
                "one signal")
        else:
            owner[channel] = name, gpio
    return problems


def check_buses(pinmap):
    """Each ``[bus.NAME]`` has id 0 or 1, a frequency, and sda/scl naming pins whose
    function is that controller's SDA/SCL; every I2C pin belongs to a bus."""
    problems, pins, used = [], _pins(pinmap), set()
    for bus, entry in _table(pinmap, "bus").items():
        where = f"bus.{bus}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: not a table")
            continue
        problems += _check_fields(where, entry, BUS_FIELDS)
        i2c_id = entry.get("id")
        if "id" in entry and i2c_id not in (0, 1):
            problems.append(f"{where}.id: {i2c_id!r} is not an I2C controller (0 or 1)")
        freq = entry.get("freq_hz")
        if "freq_hz" in entry and not _positive_int(freq, I2C_MAX_HZ):
            problems.append(f"{where}.freq_hz: {freq!r} is not a frequency in Hz "
                            f"(1-{I2C_MAX_HZ})")
        for line in ("sda", "scl"):
            ref = entry.get(line)
            if line not in entry:
                continue
            if not isinstance(ref, str):
                problems.append(f"{where}.{line}: {ref!r} is not a pin name")
                continue
            used.add(ref)
            if ref not in pins:
                problems.append(f"{where}.{line}: no pin named {ref!r}")
            elif i2c_id in (0, 1) and pins[ref].get("function") != f"i2c{i2c_id}_{line}":
                problems.append(f"{where}.{line}: pins.{ref} has function "
                                f"{pins[ref].get('function')!r}; I2C{i2c_id} needs "
                                f"i2c{i2c_id}_{line}")
    for name, pin in pins.items():
        if pin.get("function") in I2C_GPIOS and name not in used:
            problems.append(f"pins.{name}.function: {pin['function']} but no [bus] table "
                            "uses this pin")
    return problems


def check_analog(pinmap):
    """Each ``[analog.NAME]`` names an adc pin and gives its divider in whole ohms > 0."""
    problems, pins = [], _pins(pinmap)
    for name, entry in _table(pinmap, "analog").items():
        where = f"analog.{name}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: not a table")
            continue
        if name not in pins:
            problems.append(f"{where}: no pin named {name!r}")
        elif pins[name].get("function") != "adc":
            problems.append(f"{where}: pins.{name} has function "
                            f"{pins[name].get('function')!r}, not adc")
        problems += _check_fields(where, entry, ANALOG_FIELDS)
        for field in ANALOG_FIELDS:
            if field in entry and not _positive_int(entry[field]):
                problems.append(f"{where}.{field}: {entry[field]!r} is not a resistance "
                                "(a positive integer, ohms)")
    return problems


def check_wokwi_table(pinmap):
    """``[wokwi]`` gives, for every pin that goes to an external part, the part pin it
    is wired to in hardware/diagram.json (``"part_id:PIN"``); the Pico's own pins have
    none."""
    problems, pins, table = [], _pins(pinmap), _table(pinmap, "wokwi")
    for name, endpoint in table.items():
        if name not in pins:
            problems.append(f"wokwi.{name}: no pin named {name!r}")
        elif pins[name].get("part") == BOARD_PART:
            problems.append(f"wokwi.{name}: pins.{name} is on the Pico itself, not wired")
        if not (isinstance(endpoint, str) and re.fullmatch(r"[^:\s]+:[^:\s]+", endpoint)):
            problems.append(f"wokwi.{name}: {endpoint!r} is not a Wokwi pin "
                            "(\"part_id:PIN\")")
    for name, pin in pins.items():
        if pin.get("part") != BOARD_PART and name not in table:
            problems.append(f"wokwi.{name}: missing (the diagram.json part pin that "
                            f"pins.{name} is wired to)")
    return problems


def check_generated_names(pinmap):
    """The names pins.py defines (NAME, NAME_ACTIVE, NAME_PULL, BUS_ID, BUS_FREQ_HZ,
    NAME_DIVIDER) are all different."""
    problems, owner = [], {}
    for name, source in _generated_names(pinmap):
        if name in owner and owner[name] != source:
            problems.append(f"{source}: generates {name}, which {owner[name]} also generates")
        owner.setdefault(name, source)
    return problems


def _generated_names(pinmap):
    for name in _pins(pinmap):
        for suffix in ("", "_ACTIVE", "_PULL"):
            yield name + suffix, f"pins.{name}"
    for bus in _table(pinmap, "bus"):
        yield bus + "_ID", f"bus.{bus}"
        yield bus + "_FREQ_HZ", f"bus.{bus}"
    for name in _table(pinmap, "analog"):
        yield name + "_DIVIDER", f"analog.{name}"


CHECKS = (check_structure, check_unique_gpios, check_functions, check_board_pins, check_pwm,
          check_buses, check_analog, check_wokwi_table, check_generated_names,
          check_firmware_needs)


def validate(pinmap):
    """Every problem of the pin map, as strings naming table, pin and field
    (``pins.STEP.gpio: ...``); empty when the map is valid."""
    return [problem for check in CHECKS for problem in check(pinmap)]


def _check_fields(where, entry, fields):
    return ([f"{where}.{f}: missing" for f in fields if f not in entry]
            + [f"{where}.{k}: unknown field (fields: {', '.join(fields)})"
               for k in entry if k not in fields])


def _positive_int(value, maximum=None):
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return ok and (maximum is None or value <= maximum)


def _gp_list(gpios):
    return ", ".join(f"GP{g}" for g in sorted(gpios))


# --- Generated text --------------------------------------------------------------------

PINS_PY_HEADER = '''"""The dev board's pin map: GPIOs, active levels, pulls, I2C bus, ADC dividers.

Generated from hardware/pins.toml by ``python -m host_tools.pinmap --write``: do not
edit (a test fails when this file and pins.toml disagree).

NAME: the GPIO number. NAME_ACTIVE: 1 when a high level means "on", 0 when low does.
NAME_PULL: the internal pull to enable ("up", "down"), or None (no pull, or a resistor
on the board). BUS_ID, BUS_FREQ_HZ: the I2C controller and its clock. NAME_DIVIDER:
(top_ohm, bottom_ohm) in front of an ADC pin: source = pin * (top + bottom) / bottom.
"""
'''
_PULL_VALUES = {"up": '"up"', "down": '"down"', "none": "None", "external_up": "None"}


def pins_py(pinmap):
    """The text of ``firmware/board/pins.py`` for a valid pin map: plain assignments in
    pins.toml order, MicroPython-compatible, deterministic."""
    lines = [PINS_PY_HEADER.rstrip("\n")]
    for name, pin in _pins(pinmap).items():
        lines += ["", f"# {pin['part']}: {pin['function']} {pin['direction']}, pull "
                      f"{pin['pull']}",
                  f"{name} = {pin['gpio']}",
                  f"{name}_ACTIVE = {1 if pin['active'] == 'high' else 0}",
                  f"{name}_PULL = {_PULL_VALUES[pin['pull']]}"]
    for bus, entry in _table(pinmap, "bus").items():
        lines += ["", f"{bus}_ID = {entry['id']}", f"{bus}_FREQ_HZ = {entry['freq_hz']}"]
    analog = _table(pinmap, "analog")
    if analog:
        lines.append("")
    for name, entry in analog.items():
        lines.append(f"{name}_DIVIDER = ({entry['top_ohm']}, {entry['bottom_ohm']})")
    return "\n".join(lines) + "\n"


MARKDOWN_BEGIN = "<!-- pin table: generated by python -m host_tools.pinmap --write -->"
MARKDOWN_END = "<!-- end of pin table -->"
_COLUMNS = ("gpio", "function", "direction", "pull", "active", "part", "purpose")


def markdown_table(pinmap):
    """The pin table of hardware/README.md (GitHub Markdown), one row per pin in
    pins.toml order."""
    rows = ["| Pin | GPIO | Function | Direction | Pull | Active | Part | Purpose |",
            "|---|---|---|---|---|---|---|---|"]
    for name, pin in _pins(pinmap).items():
        cells = [f"`{name}`"] + [_cell(pin, c) for c in _COLUMNS]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(pin, column):
    value = pin[column]
    text = f"GP{value}" if column == "gpio" else str(value)
    return text.replace("|", "\\|")


def readme_with_table(readme_text, pinmap):
    """``readme_text`` with the text between the pin-table markers replaced by
    :func:`markdown_table`; PinMapError when the markers are missing."""
    begin, end = readme_text.find(MARKDOWN_BEGIN), readme_text.find(MARKDOWN_END)
    if begin < 0 or end < begin:
        raise PinMapError(f"{README}: the markers {MARKDOWN_BEGIN!r} and {MARKDOWN_END!r} "
                          "are missing")
    head = readme_text[:begin + len(MARKDOWN_BEGIN)]
    return head + "\n" + markdown_table(pinmap) + readme_text[end:]


# --- The Wokwi diagram -----------------------------------------------------------------

WOKWI_PICO = "wokwi-pi-pico"
# Wokwi's names for the Pico's pins (docs.wokwi.com/parts/wokwi-pi-pico): GP0-GP22,
# GP26-GP28, and two test points for GPIOs not on the header.
WOKWI_PICO_ALIASES = {"TP4": 23, "TP5": 25}
WOKWI_PICO_POWER = tuple(f"GND.{i}" for i in range(1, 9)) + (
    "VSYS", "VBUS", "3V3", "3V3_EN", "RUN", "ADC_VREF", "AGND")


def _wokwi_gpio(pin_name):
    """GPIO number of a wokwi-pi-pico pin name, None for power/control pins; ValueError
    for a name the part does not have."""
    if pin_name in WOKWI_PICO_ALIASES:
        return WOKWI_PICO_ALIASES[pin_name]
    match = re.fullmatch(r"GP(\d+)", pin_name)
    if match and int(match.group(1)) in HEADER_GPIOS:
        return int(match.group(1))
    if pin_name in WOKWI_PICO_POWER:
        return None
    raise ValueError(pin_name)


def _nets(connections):
    """Union the endpoints joined by wires: ``{endpoint: net id}`` (a part's pins are
    separate endpoints; only wires join them)."""
    parent = {}

    def root(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in connections:
        parent[root(a)] = root(b)
    return {x: root(x) for x in parent}


def check_diagram(pinmap, diagram):
    """Problems with ``diagram`` (Wokwi diagram.json data) against the pin map: every
    ``[wokwi]`` part pin must be wired to ``pico:GP<gpio>`` of its pin, no two Pico GPIOs
    may be joined, and the diagram may wire no Pico GPIO that the pin map does not name
    (power and ground pins are free)."""
    parts = diagram.get("parts", []) if isinstance(diagram, dict) else []
    ids = [p.get("id") for p in parts if isinstance(p, dict)]
    picos = [p["id"] for p in parts if isinstance(p, dict) and p.get("type") == WOKWI_PICO]
    if len(picos) != 1:
        return [f"diagram.json: needs exactly one {WOKWI_PICO} part, found {len(picos)}"]
    pico = picos[0]
    problems = [f"diagram.json: part id {i!r} is used twice" for i in sorted(set(ids))
                if ids.count(i) > 1]
    wires, wired_gpios = [], {}
    for n, conn in enumerate(diagram.get("connections", [])):
        ends = conn[:2] if isinstance(conn, list) else []
        bad = [e for e in ends if not (isinstance(e, str) and ":" in e)]
        if len(ends) != 2 or bad:
            problems.append(f"diagram.json connections[{n}]: {conn!r} is not a wire "
                            "[\"part:PIN\", \"part:PIN\", colour, route]")
            continue
        for end in ends:
            part, pin = end.split(":", 1)
            if part not in ids and not part.startswith("$"):
                problems.append(f"diagram.json connections[{n}]: {end} names no part")
            elif part == pico:
                try:
                    gpio = _wokwi_gpio(pin)
                except ValueError:
                    problems.append(f"diagram.json connections[{n}]: {end} is not a pin "
                                    f"of {WOKWI_PICO}")
                    continue
                if gpio is not None:
                    wired_gpios[end] = gpio
        wires.append(tuple(ends))
    nets = _nets(wires)
    problems += _check_shorts(nets, wired_gpios)
    problems += _check_endpoints(pinmap, nets, wired_gpios, ids)
    named = {_gpio(p) for p in _pins(pinmap).values()}
    problems += [f"diagram.json: {end} is wired, but no pin in pins.toml uses GP{gpio}"
                 for end, gpio in sorted(wired_gpios.items()) if gpio not in named]
    return problems


def _check_shorts(nets, wired_gpios):
    by_net = {}
    for end, gpio in wired_gpios.items():
        by_net.setdefault(nets[end], set()).add(gpio)
    return [f"diagram.json: {_gp_list(gpios)} are wired together"
            for gpios in sorted(by_net.values(), key=min) if len(gpios) > 1]


def _check_endpoints(pinmap, nets, wired_gpios, ids):
    problems, pins = [], _pins(pinmap)
    for name, endpoint in _table(pinmap, "wokwi").items():
        pin = pins.get(name)
        if pin is None or not isinstance(endpoint, str) or _gpio(pin) is None:
            continue  # reported by validate()
        expected = _gpio(pin)
        if endpoint.split(":", 1)[0] not in ids:
            problems.append(f"{name}: {endpoint} names no part in diagram.json")
            continue
        net = nets.get(endpoint)
        found = sorted({g for end, g in wired_gpios.items() if nets[end] == net})
        if net is None or not found:
            problems.append(f"{name}: {endpoint} is not wired to the Pico "
                            f"(pins.toml: GP{expected})")
        elif expected not in found:
            problems.append(f"{name}: {endpoint} is wired to {_gp_list(found)}, "
                            f"pins.toml says GP{expected}")
    return problems


# --- parts.csv ---------------------------------------------------------------------------

PARTS_COLUMNS = ("part", "quantity", "example part number", "purpose", "interface")


def load_parts(path=None):
    """hardware/parts.csv as ``(rows, columns)``: rows are dicts keyed by the header."""
    path = Path(path or REPO / PARTS_CSV)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return list(reader), tuple(reader.fieldnames or ())
    except OSError as exc:
        raise PinMapError(f"{path}: {exc}") from exc


def check_parts(pinmap, rows, columns):
    """parts.csv has exactly :data:`PARTS_COLUMNS`, a positive integer quantity per row,
    and a row for every ``part`` named in the pin map."""
    problems = []
    if tuple(columns) != PARTS_COLUMNS:
        problems.append(f"parts.csv: columns {list(columns)}, expected {list(PARTS_COLUMNS)}")
    names = {row.get("part") for row in rows}
    for row in rows:
        if not (row.get("quantity") or "").isdigit() or int(row["quantity"]) < 1:
            problems.append(f"parts.csv: {row.get('part')!r} has quantity "
                            f"{row.get('quantity')!r}")
    for name, pin in _pins(pinmap).items():
        if pin.get("part") not in names:
            problems.append(f"pins.{name}.part: {pin.get('part')!r} has no row in parts.csv")
    return problems


# --- The wiring picture ------------------------------------------------------------------

FUNCTION_COLOURS = {"sio": "#1f77b4", "pio": "#d62728", "pwm": "#9467bd", "adc": "#2ca02c",
                    "i2c0_sda": "#ff7f0e", "i2c0_scl": "#ff7f0e", "i2c1_sda": "#ff7f0e",
                    "i2c1_scl": "#ff7f0e"}
SVG_RC = {"svg.hashsalt": "itb-pinmap", "svg.fonttype": "none", "font.family": "DejaVu Sans",
          "font.size": 9}


def _layout(pinmap):
    """Rows (top = 0) of the picture: the Pico's GPIO n on row n at the left; on the
    right the part boxes in pins.toml order, one row per pin and a gap between parts.
    Returns ``([(part, [(pin name, row)])], rows)``."""
    parts = {}
    for name, pin in _pins(pinmap).items():
        if pin["part"] != BOARD_PART:
            parts.setdefault(pin["part"], []).append(name)
    placed, row = [], 0
    for part, names in parts.items():
        placed.append((part, [(n, row + 1 + i) for i, n in enumerate(names)]))
        row += len(names) + 2
    return placed, max(GPIO_COUNT, row)


def render(pinmap, path):
    """Draw the wiring at ``path`` (SVG; PNG if it ends in ``.png``): the Pico's GPIOs
    as a column on the left, the parts as boxes on the right, a line per connection
    labelled ``NAME (GPn)``; the board's own pins are labelled inside the Pico column.
    Deterministic for a given matplotlib version (fixed hash salt, no date, text kept
    as text)."""
    import matplotlib
    from matplotlib.figure import Figure

    pins = _pins(pinmap)
    by_gpio = {pin["gpio"]: name for name, pin in pins.items()}
    parts, rows = _layout(pinmap)
    with matplotlib.rc_context(SVG_RC):
        fig = Figure(figsize=(11, 0.26 * rows + 1.2))
        ax = fig.add_axes((0.01, 0.01, 0.98, 0.94))
        ax.set_xlim(0, 100)
        ax.set_ylim(rows + 1, -1.5)
        ax.axis("off")
        ax.set_title(f"{pinmap['board']}: wiring generated from hardware/pins.toml",
                     fontsize=10)
        _draw_pico(ax, by_gpio, pins)
        for part, members in parts:
            _draw_part(ax, part, members, pins)
        for i, function in enumerate(("sio", "pio", "pwm", "i2c0_sda", "adc")):
            ax.text(30 + 7 * i, rows, function[:3], color=FUNCTION_COLOURS[function],
                    va="center")
        if str(path).endswith(".png"):  # a picture to look at; the README embeds the SVG
            fig.savefig(path, format="png", dpi=110)
        else:
            fig.savefig(path, format="svg", metadata={"Date": None})


def _draw_pico(ax, by_gpio, pins):
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((2, -0.7), 22, GPIO_COUNT + 0.4, fill=False, lw=1.2))
    ax.text(13, -1.0, "Raspberry Pi Pico / Pico 2", ha="center", va="bottom", weight="bold")
    for gpio in range(GPIO_COUNT):
        name = by_gpio.get(gpio)
        board = BOARD_PINS.get(gpio)
        colour = FUNCTION_COLOURS[pins[name]["function"]] if name else "#999999"
        label = f"GP{gpio}"
        if board:
            label += f"  {name} (on board)" if name else "  (on board)"
        ax.text(23, gpio, label, ha="right", va="center", color=colour)


def _draw_part(ax, part, members, pins):
    from matplotlib.patches import Rectangle

    top, bottom = members[0][1] - 0.6, members[-1][1] + 0.6
    ax.add_patch(Rectangle((62, top), 36, bottom - top, fill=False, lw=1.2))
    ax.text(80, top - 0.15, part, ha="center", va="bottom", weight="bold")
    for name, row in members:
        pin = pins[name]
        colour = FUNCTION_COLOURS[pin["function"]]
        ax.plot([24, 62], [pin["gpio"], row], color=colour, lw=1)
        ax.text(63, row, f"{name} (GP{pin['gpio']})", ha="left", va="center", color=colour)
        ax.text(97, row, f"{pin['function']}, {pin['direction']}", ha="right", va="center",
                color="#555555", fontsize=7)


# --- Command line ------------------------------------------------------------------------

def _stale(root, rel, expected, what):
    """A problem line when ``root/rel`` does not hold ``expected`` (with a short diff)."""
    path = root / rel
    actual = path.read_text(encoding="utf-8") if path.exists() else ""
    if actual == expected:
        return []
    diff = list(difflib.unified_diff(actual.splitlines(), expected.splitlines(),
                                     str(rel), "generated", lineterm="", n=1))
    shown = "\n    ".join(diff[:20] + (["..."] if len(diff) > 20 else []))
    return [f"{rel} is stale ({what}): run python -m host_tools.pinmap --write\n    {shown}"]


def check_firmware(root):
    """What keeps the firmware from using the map under repository ``root``: an
    invalid map or a stale pins.py (``itbctl deploy`` refuses to build on them)."""
    pinmap = load(root / PINS_TOML)
    return validate(pinmap) or _stale(root, PINS_PY, pins_py(pinmap),
                                      "differs from hardware/pins.toml")


def check_all(root):
    """Every problem in the hardware description under repository ``root``: the map,
    the generated pins.py and README table, the diagram and parts.csv."""
    pinmap = load(root / PINS_TOML)
    problems = validate(pinmap)
    if problems:
        return problems  # generated files cannot be compared with an invalid map
    problems += _stale(root, PINS_PY, pins_py(pinmap), "differs from hardware/pins.toml")
    readme = _read(root / README)
    problems += _stale(root, README, readme_with_table(readme, pinmap), "pin table")
    problems += check_diagram(pinmap, load_diagram(root / DIAGRAM))
    problems += check_parts(pinmap, *load_parts(root / PARTS_CSV))
    return problems


def write_all(root):
    """Regenerate pins.py and the README pin table from a valid map; returns the
    problems instead when the map is invalid."""
    pinmap = load(root / PINS_TOML)
    problems = validate(pinmap)
    if not problems:
        (root / PINS_PY).write_text(pins_py(pinmap), encoding="utf-8")
        readme = _read(root / README)
        (root / README).write_text(readme_with_table(readme, pinmap), encoding="utf-8")
    return problems


def main(argv=None):
    """``python -m host_tools.pinmap``; returns the exit status (0 ok, 1 problems)."""
    parser = argparse.ArgumentParser(
        prog="python -m host_tools.pinmap",
        description="Check hardware/pins.toml (the dev board's pin map) against the RP2040 "
                    "and the Pico, and keep what is generated from it up to date: "
                    "firmware/board/pins.py, the pin table in hardware/README.md. Also "
                    "checks hardware/diagram.json (Wokwi) and hardware/parts.csv.")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true",
                        help="(default) exit 1 naming every problem and stale file")
    action.add_argument("--write", action="store_true",
                        help="regenerate firmware/board/pins.py and the README pin table")
    action.add_argument("--markdown", action="store_true",
                        help="print the README pin table (Markdown)")
    action.add_argument("--render", metavar="SVG", type=Path,
                        help="draw the wiring into this SVG file (e.g. hardware/wiring.svg)")
    parser.add_argument("--root", type=Path, default=REPO,
                        help="repository root holding hardware/ and firmware/ "
                             "(default: this checkout)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except PinMapError as exc:
        print(f"pinmap: {exc}", file=sys.stderr)
        return 1


def _run(args):
    root = args.root
    if args.write:
        problems = write_all(root)
        done = f"wrote {PINS_PY} and the pin table of {README}"
    elif args.markdown or args.render:
        pinmap = load(root / PINS_TOML)
        problems = validate(pinmap)
        if not problems and args.markdown:
            sys.stdout.write(markdown_table(pinmap))
        elif not problems:
            render(pinmap, args.render)
        done = f"wrote {args.render}" if args.render else ""
    else:
        problems = check_all(root)
        done = f"{PINS_TOML}, {PINS_PY}, {README}, {DIAGRAM}, {PARTS_CSV}: consistent"
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"pinmap: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    if done:
        print(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
