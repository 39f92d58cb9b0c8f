"""One trial's three phases: train -> predict -> evaluate.

Each phase is usable alone (``biohash train|predict|eval``) and they
communicate only through files in the run directory, so any phase can be
rerun by itself, as in the old workflow. ``run_trial`` composes them.
"""
from biohash.pipeline.evaluate import evaluate
from biohash.pipeline.predict import predict
from biohash.pipeline.run import run_trial
from biohash.pipeline.runtime import Runtime
from biohash.pipeline.train import TrainResult, train

__all__ = ["Runtime", "TrainResult", "train", "predict", "evaluate", "run_trial"]
