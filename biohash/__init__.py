"""biohash: deep hashing with biologically plausible learning rules, at sweep scale.

Subpackages, one concept each: ``data`` (datasets, processed store, loader),
``bio`` (learning rules), ``models`` (arch registry), ``losses``, ``metrics``,
``pipeline`` (train -> predict -> evaluate), ``trainables`` (the Ray Tune
trainable), ``search_spaces``, ``orchestrator`` (sweeps), ``results`` (MLflow
and Parquet sinks) and ``analysis`` (tables and plots). ``import biohash`` is
light: torch, Ray and MLflow load only where used.
"""
from biohash.config import TrialConfig
from biohash.errors import BiohashError, ConfigError, DataError, ResultsError, SweepError

__version__ = "0.1.0"

__all__ = ["TrialConfig", "BiohashError", "ConfigError", "DataError", "SweepError",
           "ResultsError", "__version__"]
