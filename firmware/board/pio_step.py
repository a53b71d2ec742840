"""The PIO program that makes one stroke's step burst (RP2040 / RP2350 PIO).

Kept in its own module: ``rp2.asm_pio`` runs the program's function with the
module's globals replaced by the PIO instructions, and the type checker needs
``from rp2.asm_pio import *``, which shadows names such as ``set`` and ``x``
(MICROPYTHON_NOTES, type checking).

Protocol (one burst per word):

- the CPU puts ``steps - 1`` (steps >= 1) in the TX FIFO;
- the program makes that many STEP pulses (set pin high, low) and then pushes
  its X register: ``0xFFFFFFFF`` when every step was made;
- before each step it tests the jmp pin (the driver's DIAG / fault output): high
  stops the burst at once, and X then holds ``remaining - 1``;
- so ``made = steps - ((x + 1) & 0xFFFFFFFF)`` in both cases (``steps_made``).

The burst is bounded by its count in hardware: it ends by itself even if the
CPU stops (the runner then hears of it after the watchdog reset, SR-26). One
step takes ``CYCLES_PER_STEP`` state-machine cycles, so the step rate is
``freq // CYCLES_PER_STEP``.
"""

import rp2

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rp2.asm_pio import *  # noqa: F403 - the PIO instruction names, for the checker

CYCLES_PER_STEP = 130  # jmp pin + set [31] + nop [31] + set [31] + nop [31] + jmp x--


@rp2.asm_pio(set_init=rp2.PIO.OUT_LOW)
def step_burst():
    pull(block)  # noqa: F405
    mov(x, osr)  # noqa: F405
    label("step")  # noqa: F405
    jmp(pin, "stop")  # noqa: F405
    set(pins, 1)[31]  # noqa: F405
    nop()[31]  # noqa: F405
    set(pins, 0)[31]  # noqa: F405
    nop()[31]  # noqa: F405
    jmp(x_dec, "step")  # noqa: F405
    label("stop")  # noqa: F405
    mov(isr, x)  # noqa: F405
    push(block)  # noqa: F405


def steps_made(steps, x):
    """Steps made by a burst of ``steps`` whose program pushed ``x`` (see above)."""
    return steps - ((x + 1) & 0xFFFFFFFF)
