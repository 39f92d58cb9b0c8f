"""Sweeps on Ray Tune: launch (embedded local Ray or an existing cluster),
per-trial resources, retries, resume, and the driver-side result sinks."""
from biohash.orchestrator.sweep import (SweepOptions, SweepSummary, list_sweep_names,
                                        resume_sweep, run_sweep, sweep_status)

__all__ = ["SweepOptions", "SweepSummary", "run_sweep", "resume_sweep", "sweep_status",
           "list_sweep_names"]
