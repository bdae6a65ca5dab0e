"""Entry point of ``python -m sim.probe`` (see :mod:`sim.probe.cli`)."""

from sim.probe.cli import main

raise SystemExit(main())
