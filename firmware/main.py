"""Boot entry on a Pico (MicroPython runs ``/main.py`` at every reset): the board
adapter decides between a MAINTENANCE boot and the app (``board/rp2.py``)."""

import micropython

micropython.kbd_intr(-1)  # first: a 0x03 from the host must not interrupt the boot

from board import rp2  # noqa: E402

rp2.main()
