"""Stopping a sweep on purpose or by accident: Ctrl-C, SIGTERM, or the driver losing Ray.

Left alone, Ray Tune stops gracefully on SIGINT, logs *Ray's* hint
(``Tuner.restore(path=..., trainable=...)``, which a biohash user cannot
type) and returns as if the sweep had ended, so the caller counted every
trial as finished and exited 0; SIGTERM killed the driver without saving the
experiment state. ``interruptible()`` makes both signals take Tune's graceful
path (its SIGUSR1 handler: running trials stop, the experiment state is
saved), records which signal it was, and hides Tune's hint and interrupt
chatter, so that the caller can print a true summary and the biohash
command that continues the sweep. A second signal stops at once.

Exit statuses (``EXIT_STATUS``) follow the shell convention 128 + signal
number: 130 for SIGINT, 143 for SIGTERM; losing the Ray cluster is 75
(``EX_TEMPFAIL``: try again later, i.e. ``biohash sweep resume``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Iterator

__all__ = ["Interruption", "interruptible", "is_lost_ray", "EXIT_STATUS", "LOST_RAY"]

#: The reason recorded when the driver's connection to Ray broke mid-sweep.
LOST_RAY = "lost Ray"
EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 143, LOST_RAY: 75}
#: Tune logs these; biohash prints its own words instead.
_TUNE_LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")
_TUNE_RESTORE_HINT = "Tuner.restore("
_TUNE_STOP_NOTICE = "Stop signal received"
#: Expected after an interrupt (trials cut off, or never started): the summary says it.
_TUNE_INCOMPLETE = ("Trials did not complete", "Failed to fetch metrics")


@dataclass
class Interruption:
    """Why the sweep stopped early: ``"SIGINT"``, ``"SIGTERM"``, ``LOST_RAY``, or None."""

    reason: str | None = None


class _HideTuneHints(logging.Filter):
    """Drops Tune's restore hint always, and its interrupt notices once interrupted."""

    def __init__(self, state: Interruption) -> None:
        super().__init__()
        self.state = state

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _TUNE_RESTORE_HINT in message or _TUNE_STOP_NOTICE in message:
            return False
        return not (self.state.reason and message.startswith(_TUNE_INCOMPLETE))


@contextlib.contextmanager
def interruptible() -> Iterator[Interruption]:
    """Within this block SIGINT/SIGTERM stop a running ``Tuner.fit`` gracefully.

    Before Tune has started (Ray still starting), or on a second signal, the
    handler raises ``KeyboardInterrupt`` instead; ``state.reason`` says which
    signal it was either way. Off the main thread signals cannot be caught:
    the block then only hides Tune's hint.
    """
    state = Interruption()
    hide = _HideTuneHints(state)
    for name in _TUNE_LOGGERS:
        logging.getLogger(name).addFilter(hide)
    try:
        if threading.current_thread() is not threading.main_thread():
            yield state
        else:
            with _graceful_signals(state):
                yield state
    finally:
        for name in _TUNE_LOGGERS:
            logging.getLogger(name).removeFilter(hide)


@contextlib.contextmanager
def _graceful_signals(state: Interruption) -> Iterator[None]:
    """SIGINT/SIGTERM -> Tune's graceful stop (first signal), KeyboardInterrupt (second)."""
    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    saved = {sig: signal.getsignal(sig) for sig in watched}
    env_before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")

    def on_signal(signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if state.reason is not None:
            raise KeyboardInterrupt  # second signal: stop now, without saving
        state.reason = name
        # Tune installs its stop handler on SIGUSR1 for the duration of fit().
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if not callable(tune_stop) or tune_stop is saved[signal.SIGUSR1]:
            raise KeyboardInterrupt
        print(f"biohash: {name} received: stopping the sweep and saving its state "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)
        tune_stop(signal.SIGUSR1, frame)

    # Tune would otherwise replace our SIGINT handler with its own, which
    # forgets which signal it was and cannot be told apart from SIGTERM.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if env_before is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = env_before


def is_lost_ray(exc: BaseException) -> bool:
    """Whether ``exc`` out of ``Tuner.fit`` means the driver lost its Ray cluster
    (head node, GCS or local raylet gone) rather than a bug to show."""
    import ray.exceptions as rex

    return isinstance(exc, (rex.RaySystemError, rex.RpcError, rex.LocalRayletDiedError,
                            ConnectionError))
