"""Boot entry on a Pico (MicroPython runs ``/main.py`` at every reset): the board
adapter decides between a MAINTENANCE boot and the app (``board/rp2.py``)."""

from board import rp2

rp2.main()
