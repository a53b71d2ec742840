"""Test kit shared by the test suite and (later) ``itbctl hil``: an independent
reference model of the safety rules (``model.py``) and the hypothesis stateful
machine that drives the controller through the runner (``machine.py``)."""
