"""Named YAML grids of trials: load, check, expand, plan.

A space file (shipped ones live beside this module; ``SPACES.names()``)::

    description: one line                 # shown by `biohash sweep plan`
    fixed:                                # field: value, for every trial
      db: DIGITS
      ep: 10
    grid:                                 # field: [values] -> cartesian product
      mode: [bp, fa, usf, frsf]
      nbits: [16, 32]
    overrides:                            # applied in order, to matching trials
      - when: {loss: HyP2}                #   all keys must match (a list = any of)
        set: {bs: 100}                    #   set single values ...
      - when: {loss: DCH}
        grid: {penalty: [1.0e-5, 1.0e-3, 0.1]}   # ... and/or expand sub-axes
      - when: {loss: DPSH}                #   arms: alternatives, each the override's
        set: {bs: 128}                    #   set/grid plus its own set/grid; the
        arms:                             #   matching trial becomes their union
          - set: {no_cube: true, penalty: 0.0}
          - set: {no_cube: false}
            grid: {penalty: [1.0, 0.1, 0.01]}
    exclude:                              # drop trials matching all keys of
      - {arch: bio-alexnet, mode: dfa}    #   any entry (a list = any of)
    seeds: [0, 1, 2, 3]                   # or `repeats: 4` (= seeds 0..3)
    sample:                               # drawn per trial by a searcher, not expanded:
      lr: {loguniform: [1.0e-6, 1.0e-3]}  #   uniform|loguniform: [low, high]
      penalty: {loguniform: [1.0e-5, 1.0]}#   quniform: [low, high, q]
      bs: {choice: [64, 128]}             #   randint|lograndint: [low, high] (both included)
    search:                               #   choice: [values] (any field)
      algorithm: tpe                      # grid (default without `sample`) | random | tpe
      num_samples: 16                     # draws per grid combination (required with `sample`)
      metric: val_mAP                     # maximised; reported every epoch (ASHA's rungs)
      seed: 0                             # sampler seed of combination i: seed + i
      max_concurrent: 4                   # optional; --max-concurrent overrides it

Keys are ``TrialConfig`` field names (the old CLI flag names: exp, db,
loss, nbits, arch, seed, bs, mode, ep, pt, lr, ...) or their long aliases
(batch_size, epochs, ...). A field not named anywhere keeps its
``TrialConfig`` default, and ``when``/``exclude`` compare against that
default too. YAML note: write ``1.0e-5`` (``1e-5`` is read as text, which
works too); quote values with commas, e.g. ``"backbone=frozen,head=fa"``.

Expansion: ``grid`` product over ``fixed`` (first grid key outermost) ->
each override in turn (its arms in order; within an arm the override's
grid, then the arm's; an arm may not name a field its override sets or
expands, so nothing silently wins) -> seeds (outermost: a half-finished
sweep already covers every configuration once) -> exclusions. It is an error when
nothing is left, and when two trials are the same run (same
``TrialConfig.trial_id``) or train the same parts with the same rules
(e.g. ``bio_scope: backbone=bp,head=fa`` and ``bio_scope: head`` with
``mode: fa``): duplicates mean an override or scope collapsed an axis, so
they are reported rather than silently merged; drop one with ``exclude``.

Sampling: ``grid`` (with overrides, seeds, exclusions) still expands into
combinations; each gets ``num_samples`` configs of the ``sample`` axes,
drawn by Optuna (``TPESampler`` for ``tpe``, ``RandomSampler`` for
``random``) through Ray Tune's ``OptunaSearch``, one study per combination
(``searcher.PerCombinationSearcher``). A sampled field is named nowhere else
(not fixed, grid, override, exclude; never ``seed``, ``db`` or ``exp``); int
fields take ``randint``/``lograndint``/``choice``, float fields
``uniform``/``loguniform``/``quniform``/``choice``, others ``choice``. Drawn
floats keep full precision (the run name shows them as Python prints them);
every drawn trial is a complete ``TrialConfig`` with its own stable id.
Before launch, every combination is validated with the sampled fields at
every combination of their extremes (``SearchSpace.corners``), which is also
what ``plan``'s GPU-hour upper bound is taken over. With ``--scheduler asha``
a sampled search is BOHB-style multi-fidelity search.

Errors are one line naming the file, the key and what is allowed, e.g.
``demo.yaml: grid.mode: unknown mode 'fx'; choose from bp, brsf, ...``.

Size: a space may expand to at most ``MAX_TRIALS`` (100,000) trials, grid
combinations x ``num_samples``; past it ``plan`` and ``sweep run`` alike
refuse it, naming the count, before the trial list is built.

This package imports without torch, Ray or MLflow: registry names are
checked by ``SearchSpace.expand(validate=True)`` against ``biohash.catalog``,
which knows them without importing the builders (only the sampled-search
``searcher`` module imports Ray, when a sampled sweep starts).
"""
from __future__ import annotations

from biohash.search_spaces.plan import DataStatus, Plan, plan, trial_gpu_seconds
from biohash.search_spaces.space import MAX_TRIALS, SPACES, SearchSpace, load_space

__all__ = ["SPACES", "SearchSpace", "load_space", "Plan", "DataStatus", "plan",
           "trial_gpu_seconds", "MAX_TRIALS"]
