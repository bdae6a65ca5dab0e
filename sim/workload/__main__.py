"""`python -m sim.workload DATASET --out FILE`: export a sampled workload as a trace CSV (see factory.main)."""

from sim.workload.factory import main

if __name__ == "__main__":
    raise SystemExit(main())
