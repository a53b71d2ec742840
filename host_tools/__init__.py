"""Host tools: CPython utilities that talk to and test the controller."""
