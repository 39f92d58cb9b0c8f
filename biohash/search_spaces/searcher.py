"""The Tune searcher of a space with ``sample`` axes: Optuna per grid combination.

Tune runs one searcher per experiment, and Optuna's samplers know nothing of
a grid, while a space says "every grid combination gets ``num_samples``
configs of the sampled axes" (e.g. lr and penalty tuned separately for each
rule and dataset). :class:`PerCombinationSearcher` therefore holds one Ray
Tune ``OptunaSearch`` per grid combination (a ``TPESampler`` for ``tpe``, a
``RandomSampler`` for ``random``; all sampling is Optuna's) and hands out
trials round-robin over the combinations, so a half-finished sweep has
explored every combination about equally and each TPE sees its own results
early. Results go back to the combination's own ``OptunaSearch``.

Each suggestion is a complete ``TrialConfig`` dict under ``"trial"`` (the
combination's values plus the drawn ones, typed and validated), so the
trainable, the stable trial id (a hash of the resolved config), the Parquet
row and the MLflow child run work exactly as for a grid. Sampled floats keep
full precision: the run name shows them as Python prints them.

The searcher's whole state (every study, which Tune trial belongs to which
combination, the ids issued) is pickled by ``save``; Tune writes it beside
the experiment state, and ``Tuner.restore`` reads it back, so a resumed sweep
continues the same studies without losing or repeating a trial.

Imports Ray and Optuna: load it only when a sweep with a searcher starts.
"""
from __future__ import annotations

import logging
import pickle
from typing import Any, Mapping, Sequence

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from biohash.config import TrialConfig
from biohash.search_spaces.spec import Sampled, Search

__all__ = ["PerCombinationSearcher", "tpe_startup_trials", "MAX_REDRAWS"]

log = logging.getLogger(__name__)

#: Draws a combination may retry when Optuna proposes a config already run
#: (possible with ``choice``/integer axes); after that the combination stops.
MAX_REDRAWS = 32


def tpe_startup_trials(num_samples: int) -> int:
    """Random draws before TPE models the results: a third of the budget,
    between 3 and Optuna's default 10, so small budgets still get TPE steps."""
    return max(3, min(10, num_samples // 3))


def _sampler(search: Search, seed: int) -> Any:
    import optuna

    if search.algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed,
                                          n_startup_trials=tpe_startup_trials(search.num_samples))
    return optuna.samplers.RandomSampler(seed=seed)


class PerCombinationSearcher(Searcher):
    """``search.num_samples`` Optuna draws of ``sample`` for each combination.

    ``combos``: the grid combinations (``SearchSpace.expand()``), in order;
    combination ``i`` gets the sampler seed ``search.seed + i``, so a space
    and a seed fix every draw.
    """

    def __init__(self, combos: Sequence[TrialConfig], sample: Mapping[str, Sampled],
                 search: Search, *, mode: str = "max") -> None:
        super().__init__(metric=search.metric, mode=mode)
        self._combos = [cfg.to_dict() for cfg in combos]
        self._num_samples = search.num_samples
        # Optuna distributions, converted by Tune's own converter.
        space = OptunaSearch.convert_search_space(
            {name: dist.domain() for name, dist in sample.items()})
        self._studies = [OptunaSearch(space=space, metric=search.metric, mode=mode,
                                      sampler=_sampler(search, search.seed + i))
                         for i in range(len(combos))]
        self._issued = [0] * len(combos)   # configs handed out per combination
        self._owner: dict[str, tuple[int, str]] = {}  # Tune trial id -> (combination, study key)
        self._ids: set[str] = set()        # biohash trial ids handed out

    @property
    def total(self) -> int:
        return len(self._combos) * self._num_samples

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id in self._owner:  # Tune asks again for a trial it already has
            raise RuntimeError(f"trial {trial_id} was suggested twice")
        while True:
            open_ = [i for i, n in enumerate(self._issued) if n < self._num_samples]
            if not open_:
                return Searcher.FINISHED
            i = min(open_, key=lambda j: (self._issued[j], j))  # round-robin
            drawn = self._draw(i, trial_id)
            if drawn is not None:
                cfg, key = drawn
                self._issued[i] += 1
                self._owner[trial_id] = (i, key)
                self._ids.add(cfg.trial_id)
                return {"trial": cfg.to_dict()}
            log.warning("search: combination %d (%s) yields no new config after %d draws; "
                        "it stops at %d of %d", i, self._combos[i], MAX_REDRAWS,
                        self._issued[i], self._num_samples)
            self._issued[i] = self._num_samples

    def _draw(self, i: int, trial_id: str) -> tuple[TrialConfig, str] | None:
        """A config of combination ``i`` not run before and the key its study
        knows it by, or None."""
        study = self._studies[i]
        for attempt in range(MAX_REDRAWS):
            key = trial_id if attempt == 0 else f"{trial_id}-redraw{attempt}"
            drawn = study.suggest(key)
            cfg = TrialConfig.from_dict({**self._combos[i], **drawn}, source="search")
            cfg.validate()
            if cfg.trial_id not in self._ids:
                return cfg, key
            # Already run: Optuna must not wait for it forever; a failed trial
            # does not enter TPE's model.
            study.on_trial_complete(key, None, error=True)
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._owner and self.metric in result:
            i, key = self._owner[trial_id]
            self._studies[i].on_trial_result(key, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._owner:
            # A trial cut before any report (error) has no metric: report it failed.
            failed = error or not result or self.metric not in result
            i, key = self._owner[trial_id]
            self._studies[i].on_trial_complete(key, None if failed else result, error=failed)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        # Metric, mode and space are fixed by the space file; Tune's TuneConfig
        # names the same metric and mode.
        return True

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__.copy(), fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))
