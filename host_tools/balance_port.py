"""A laboratory balance on a serial port, spoken to in MT-SICS (Mettler Toledo
Standard Interface Command Set, level 0), which many balances also understand:

    with Balance("/dev/ttyUSB0") as bal:
        grams = bal.stable_g()

``stable_g`` sends ``S`` and reads the answer ``S S <value> <unit>`` (a stable
weight). Other answers, from the MT-SICS reference manual: ``S I`` (no stable value
yet; asked again until the timeout), ``S +`` / ``S -`` (over- or underload), ``ES``
(syntax error), ``ET`` (transmission error), ``EL`` (logical error): each is a
``BalanceError`` naming it. Units ``g`` and ``mg`` are accepted (the balance's
display unit); anything else is refused rather than guessed. Settings: 8 data bits,
no parity, 1 stop bit, CR LF line ends, the baud rate set on the balance (9600 by
default). ``port`` may be any pyserial URL (``socket://``, ``rfc2217://``).
"""

import math
import time

import serial

DEFAULT_BAUD = 9600
ERRORS = {"ES": "syntax error (the balance does not know S: is it in MT-SICS mode?)",
          "ET": "transmission error (check baud rate and cable)",
          "EL": "logical error (the balance cannot weigh now)",
          "S +": "overload (the balance's range is exceeded)",
          "S -": "underload (the pan is off, or the tare is wrong)"}


class BalanceError(RuntimeError):
    """The balance gave no stable weight (the message says why)."""


def parse_answer(line):
    """Grams from one MT-SICS answer line (``"S S     12.34567 g"``); None for ``S I``
    (not stable yet). BalanceError for an error answer or an unknown line or unit."""
    text = line.strip()
    for code, why in ERRORS.items():
        if text == code or text.startswith(code + " "):
            raise BalanceError(f"balance: {why} ({text!r})")
    parts = text.split()
    if len(parts) >= 2 and parts[0] == "S" and parts[1] == "I":
        return None
    if len(parts) != 4 or parts[:2] != ["S", "S"]:
        raise BalanceError(f"balance: unexpected answer {text!r} (MT-SICS 'S S <value> g')")
    try:
        value = float(parts[2])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BalanceError(f"balance: weight {parts[2]!r} is not a number")
    if parts[3] == "g":
        return value
    if parts[3] == "mg":
        return value / 1000.0
    raise BalanceError(f"balance: unit {parts[3]!r}: set the balance to g or mg")


class Balance:
    """An MT-SICS balance on ``port`` (device path or pyserial URL)."""

    def __init__(self, port, baud=DEFAULT_BAUD, timeout_s=30.0):
        try:
            self.ser = serial.serial_for_url(port, baudrate=baud, timeout=1.0)
        except (serial.SerialException, ValueError) as e:
            raise BalanceError(f"balance: cannot open {port}: {e}") from None
        self.timeout_s = timeout_s

    def stable_g(self):
        """A stable weight (g): ``S`` is sent until the balance answers ``S S`` or
        ``timeout_s`` passes (BalanceError)."""
        end = time.monotonic() + self.timeout_s
        self.ser.reset_input_buffer()
        while time.monotonic() < end:
            try:
                self.ser.write(b"S\r\n")
                line = self.ser.readline().decode("ascii", "replace")
            except serial.SerialException as e:
                raise BalanceError(f"balance: {e}") from None
            if not line:
                continue  # no answer within a second: ask again
            grams = parse_answer(line)
            if grams is not None:
                return grams
            time.sleep(0.2)
        raise BalanceError(f"balance: no stable weight within {self.timeout_s:g} s")

    def close(self):
        self.ser.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
