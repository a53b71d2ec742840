"""A fake of MicroPython's ``micropython`` module for CPython host tests (the unix
port keeps its own, which is not extensible): ``kbd_intr`` is recorded."""

KBD_INTR = []


def kbd_intr(c):
    KBD_INTR.append(c)


def const(x):
    return x
