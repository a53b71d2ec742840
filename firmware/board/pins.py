"""The dev board's pin map: GPIOs, active levels, pulls, I2C bus, ADC dividers.

Generated from hardware/pins.toml by ``python -m host_tools.pinmap --write``: do not
edit (a test fails when this file and pins.toml disagree).

NAME: the GPIO number. NAME_ACTIVE: 1 when a high level means "on", 0 when low does.
NAME_PULL: the internal pull to enable ("up", "down"), or None (no pull, or a resistor
on the board). BUS_ID, BUS_FREQ_HZ: the I2C controller and its clock. NAME_DIVIDER:
(top_ohm, bottom_ohm) in front of an ADC pin: source = pin * (top + bottom) / bottom.
"""

# stepper driver: pio out, pull none
STEP = 2
STEP_ACTIVE = 1
STEP_PULL = None

# stepper driver: sio out, pull none
DIR = 3
DIR_ACTIVE = 1
DIR_PULL = None

# stepper driver: sio out, pull external_up
EN_N = 4
EN_N_ACTIVE = 0
EN_N_PULL = None

# stepper driver: pio in, pull down
DIAG = 5
DIAG_ACTIVE = 1
DIAG_PULL = "down"

# load cell amplifier: sio in, pull none
HX711_DOUT = 6
HX711_DOUT_ACTIVE = 0
HX711_DOUT_PULL = None

# load cell amplifier: sio out, pull none
HX711_SCK = 7
HX711_SCK_ACTIVE = 1
HX711_SCK_PULL = None

# limit switch: sio in, pull up
EMPTY_SWITCH = 8
EMPTY_SWITCH_ACTIVE = 0
EMPTY_SWITCH_PULL = "up"

# push button: sio in, pull up
BTN_ACK = 9
BTN_ACK_ACTIVE = 0
BTN_ACK_PULL = "up"

# push button: sio in, pull up
BTN_BOLUS = 10
BTN_BOLUS_ACTIVE = 0
BTN_BOLUS_PULL = "up"

# push button: sio in, pull up
BTN_PROVISION = 11
BTN_PROVISION_ACTIVE = 0
BTN_PROVISION_PULL = "up"

# piezo buzzer: pwm out, pull none
BUZZER = 12
BUZZER_ACTIVE = 1
BUZZER_PULL = None

# fail-safe buzzer: sio out, pull none
HEARTBEAT = 13
HEARTBEAT_ACTIVE = 1
HEARTBEAT_PULL = None

# status LED: pwm out, pull none
LED = 14
LED_ACTIVE = 1
LED_PULL = None

# RTC module: i2c0_sda io, pull external_up
I2C_SDA = 16
I2C_SDA_ACTIVE = 1
I2C_SDA_PULL = None

# RTC module: i2c0_scl io, pull external_up
I2C_SCL = 17
I2C_SCL_ACTIVE = 1
I2C_SCL_PULL = None

# battery divider: adc analog, pull none
BATTERY_ADC = 26
BATTERY_ADC_ACTIVE = 1
BATTERY_ADC_PULL = None

# Pico: adc analog, pull none
VSYS_ADC = 29
VSYS_ADC_ACTIVE = 1
VSYS_ADC_PULL = None

I2C_ID = 0
I2C_FREQ_HZ = 100000

BATTERY_ADC_DIVIDER = (100000, 100000)
VSYS_ADC_DIVIDER = (200000, 100000)
