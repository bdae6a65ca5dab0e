"""`python -m sim.run FILE`: the command-line entry point; sim/cli.py parses, runs, prints and exits 0/2/1."""

from sim.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
