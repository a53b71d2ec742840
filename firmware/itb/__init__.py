"""Sans-IO intrathecal baclofen pump controller (runs in CPython and MicroPython)."""
