"""``python -m sim`` works like ``itbsim``."""

from sim.cli import main

raise SystemExit(main())
