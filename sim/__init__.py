"""The simulator: the unchanged controller, through its runner, against a pump and a
patient model (``itbsim``; see README "The simulator"). CPython only."""
