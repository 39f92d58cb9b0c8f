"""Sampled search spaces: parsing, bad input, plan, the per-combination searcher,
a real TPE sweep and resume after SIGKILL with the searcher's state."""
from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from biohash.config import TrialConfig
from biohash.errors import ConfigError
from biohash.search_spaces import SearchSpace, load_space, plan

BASE = {"description": "t", "fixed": {"db": "DIGITS", "arch": "bio-cnn-small", "weights": "none"},
        "grid": {"mode": ["bp", "fa"]}}


def _space(**extra) -> SearchSpace:
    return SearchSpace.from_dict({**BASE, **extra}, name="t", source="t.yaml")


SAMPLE = {"lr": {"loguniform": ["1e-6", 1.0e-3]}, "penalty": {"loguniform": [1.0e-5, 1.0]},
          "bs": {"choice": [64, 128]}}


def test_sampled_space_counts_combinations_times_samples_and_plans_an_upper_bound(digits_root):
    space = _space(sample=SAMPLE, search={"algorithm": "tpe", "num_samples": 5, "seed": 3})
    assert len(space.expand()) == 2 and space.n_trials == 10
    assert space.search.algorithm == "tpe" and space.search.seed == 3
    assert space.sample["lr"].args == (1e-6, 1e-3)  # "1e-6" (YAML text) read as a number
    assert space.trials_per_rule == {"bp": 5, "fa": 5}
    corners = space.corners(space.expand()[0])
    assert len(corners) == 8 and {c.bs for c in corners} == {64, 128}
    the_plan = plan(space, data_root=str(digits_root))
    text = the_plan.render()
    assert "10 trials" in text and "5 samples per grid combination x 2 combinations" in text
    assert "lr       loguniform(1e-06, 0.001)" in text and "bs       choice(64, 128)" in text
    # The bound is N x the dearest corner: ep drawn up to 9 costs more than ep up to 3.
    cheap = plan(_space(sample={"ep": {"randint": [1, 3]}},
                        search={"algorithm": "random", "num_samples": 4}), data_root=digits_root)
    dear = plan(_space(sample={"ep": {"randint": [1, 9]}},
                       search={"algorithm": "random", "num_samples": 4}), data_root=digits_root)
    one = plan(_space(fixed={**BASE["fixed"], "ep": 9}), data_root=digits_root)
    assert dear.gpu_hours == pytest.approx(4 * one.gpu_hours) and cheap.gpu_hours < dear.gpu_hours


@pytest.mark.parametrize("extra, message", [
    ({"sample": {"lr": {"gaussian": [0, 1]}}, "search": {"num_samples": 2}},
     r"t.yaml: sample.lr.gaussian: unknown distribution; choose from uniform, loguniform"),
    ({"sample": {"lr": {"loguniform": [1.0e-3, 1.0e-6]}}, "search": {"num_samples": 2}},
     r"t.yaml: sample.lr.loguniform: bounds \[0.001, 1e-06\] are in the wrong order"),
    ({"sample": {"lr": {"loguniform": [0.0, 1.0e-3]}}, "search": {"num_samples": 2}},
     r"t.yaml: sample.lr.loguniform: a log scale needs bounds > 0, got \[0.0, 0.001\]"),
    ({"sample": {"lr": {"uniform": [-1.0, 1.0e-3]}}, "search": {"num_samples": 2}},
     r"t.yaml: sample.lr.uniform: .*lr"),
    ({"sample": {"lr": {"uniform": [0.1, 1.0]}}, "search": {"num_samples": 0}},
     r"t.yaml: search.num_samples: expected an integer >= 1, got 0"),
    ({"search": {"algorithm": "tpe", "num_samples": 4}},
     r"t.yaml: search.algorithm: tpe needs sampled axes"),
    ({"sample": {"lr": {"uniform": [0.1, 1.0]}}, "search": {"algorithm": "grid"}},
     r"t.yaml: search.algorithm: grid does not sample"),
    ({"sample": {"lrate": {"uniform": [0.1, 1.0]}}, "search": {"num_samples": 2}},
     r"t.yaml: sample.lrate: unknown field; choose from exp, db"),
    ({"sample": {"mode": {"choice": ["fa"]}}, "search": {"num_samples": 2}},
     r"t.yaml: sample.mode: is also named in grid"),
    ({"sample": {"bs": {"loguniform": [16, 128]}}, "search": {"num_samples": 2}},
     r"t.yaml: sample.bs.loguniform: bs is a int field; choose from randint, lograndint, choice"),
    ({"sample": {"lr": {"uniform": [0.1, 1.0]}}},
     r"t.yaml: search: sampled axes need `num_samples`"),
    ({"sample": {"lr": {"uniform": [0.1, 1.0]}}, "search": {"num_samples": 2, "algo": "tpe"}},
     r"t.yaml: search.algo: unknown key; choose from algorithm, num_samples"),
    ({"sample": {"lr": {"uniform": [0.1, 1.0]}}, "search": {"num_samples": 2, "metric": "loss"}},
     r"t.yaml: search.metric: unknown metric 'loss'; choose from val_mAP"),
    ({"sample": {"seed": {"randint": [0, 3]}}, "search": {"num_samples": 2}},
     r"t.yaml: sample.seed: seed is not sampled"),
    ({"sample": {"optim": {"choice": ["adam", "adamx"]}}, "search": {"num_samples": 2}},
     r"t.yaml: sample.optim.choice: .*adamx"),
])
def test_bad_sampled_input_is_one_line_naming_file_key_and_value(extra, message):
    with pytest.raises(ConfigError, match=message) as info:
        _space(**extra).expand()
    assert "\n" not in str(info.value)


def test_a_drawn_value_that_makes_an_invalid_trial_is_an_error_before_launch():
    bad = _space(sample={"mode": {"choice": ["fa", "nope"]}}, grid={"loss": ["DPSH"]},
                 search={"num_samples": 2})
    with pytest.raises(ConfigError, match=r"t.yaml: sample.mode.choice: unknown mode 'nope'"):
        bad.expand()


def test_shipped_search_spaces_plan(digits_root):
    demo = load_space("demo-search")
    assert demo.search.algorithm == "tpe" and set(demo.sample) == {"lr", "penalty"}
    assert demo.trials_per_rule.keys() == {"bp", "fa"}
    assert "sampled axes (tpe" in plan(demo, data_root=str(digits_root)).render()
    bio = load_space("bio-lr")
    assert {cfg.db for cfg in bio.expand()} == {"CIFAR_10", "NUS_WIDE", "MS_COCO", "ImageNet"}
    assert set(bio.sample) == {"lr", "penalty"} and bio.n_trials == 36 * bio.search.num_samples
    hh = load_space("hhnet")
    assert not hh.sample and {cfg.arch for cfg in hh.expand()} >= {"hhnet-w18", "hhnet-w32",
                                                                    "vgg16", "alexnet"}


def _searcher(algorithm: str, n: int, seed: int = 0, sample=None):
    from biohash.search_spaces.searcher import PerCombinationSearcher

    space = _space(sample=sample or SAMPLE, search={"algorithm": algorithm, "num_samples": n,
                                                    "seed": seed})
    return space, PerCombinationSearcher(space.expand(), space.sample, space.search)


def test_searcher_draws_n_valid_configs_per_combination_round_robin_and_reproducibly():
    space, searcher = _searcher("tpe", 3, seed=7)
    drawn = []
    for i in range(7):
        out = searcher.suggest(f"t{i}")
        if i == 6:
            assert out == "FINISHED"
            break
        cfg = TrialConfig.from_dict(out["trial"])
        assert 1e-6 <= cfg.lr <= 1e-3 and cfg.bs in (64, 128)
        drawn.append(cfg)
        searcher.on_trial_complete(f"t{i}", {"val_mAP": cfg.lr * 100})
    assert [c.mode for c in drawn] == ["bp", "fa"] * 3  # round-robin over the grid
    assert len({c.trial_id for c in drawn}) == 6
    _, again = _searcher("tpe", 3, seed=7)
    assert [TrialConfig.from_dict(again.suggest(f"t{i}")["trial"]).lr for i in range(2)] == \
        [c.lr for c in drawn[:2]]
    _, other = _searcher("tpe", 3, seed=8)
    assert TrialConfig.from_dict(other.suggest("t0")["trial"]).lr != drawn[0].lr


def test_searcher_state_survives_save_and_restore(tmp_path):
    _, first = _searcher("tpe", 4)
    for i in range(3):
        first.suggest(f"t{i}")
        first.on_trial_complete(f"t{i}", {"val_mAP": 0.1 * i})
    first.suggest("t3")
    first.save(str(tmp_path / "state.pkl"))
    _, restored = _searcher("tpe", 4)
    restored.restore(str(tmp_path / "state.pkl"))
    restored.on_trial_complete("t3", {"val_mAP": 0.5})  # a trial running at the save
    rest = [restored.suggest(f"u{i}") for i in range(5)]
    assert rest[-1] == "FINISHED"  # 8 in all: 4 before the save, 4 after, none repeated
    ids = {TrialConfig.from_dict(r["trial"]).trial_id for r in rest[:-1]}
    assert len(ids) == 4 and not ids & restored._ids - ids


def test_searcher_redraws_a_config_already_run_and_stops_when_none_is_left():
    # One choice with two values, four draws per combination: only two exist.
    _, searcher = _searcher("random", 4, sample={"bs": {"choice": [64, 128]}})
    out = [searcher.suggest(f"t{i}") for i in range(6)]
    assert out[-1] == "FINISHED"
    cfgs = [TrialConfig.from_dict(o["trial"]) for o in out[:-1] if o != "FINISHED"]
    assert len(cfgs) == 4 and len({c.trial_id for c in cfgs}) == 4


# ------------------------------------------------------------ real Ray sweeps
def _yaml(tmp_path: Path, *, algorithm="tpe", n=3, modes=("bp",), ep=1) -> Path:
    path = tmp_path / "searched.yaml"
    path.write_text(textwrap.dedent(f"""\
        fixed: {{db: DIGITS, arch: bio-cnn-small, loss: DPSH, nbits: 16, bs: 64, ep: {ep}, pt: 5,
                wd: 0.0, weights: none, val_size: 180, val_repeats: 1}}
        grid: {{mode: [{", ".join(modes)}]}}
        sample: {{lr: {{loguniform: [1.0e-4, 1.0e-2]}}, penalty: {{loguniform: [1.0e-4, 1.0]}}}}
        search: {{algorithm: {algorithm}, num_samples: {n}, seed: 1, max_concurrent: 2}}
        """))
    return path


@pytest.mark.slow
def test_tpe_sweep_runs_every_sampled_trial_once_with_stable_ids(tmp_path, digits_root, ray_local):
    from test_sweep import _options, _rows

    from biohash.orchestrator import run_sweep, sweep_status

    summary = run_sweep(_options(tmp_path, _yaml(tmp_path, modes=("bp", "fa"), n=2), "tpe",
                                 digits_root))
    assert summary.n_trials == 4 and summary.counts == {"done": 4} and not summary.errors
    rows = _rows(tmp_path / "sweeps", "tpe")
    assert len(rows) == 4 and sorted(r["mode"] for r in rows.values()) == ["bp", "bp", "fa", "fa"]
    for tid, row in rows.items():  # the id is the hash of the resolved (drawn) config
        cfg = TrialConfig.from_dict({k: row[k] for k in TrialConfig.__dataclass_fields__})
        assert cfg.trial_id == tid and 1e-4 <= cfg.lr <= 1e-2
    assert len({r["lr"] for r in rows.values()}) == 4
    counts = sweep_status("tpe", storage=str(tmp_path / "sweeps"))["counts"]
    assert counts["done"] == 4 and not any(n for state, n in counts.items() if state != "done")


@pytest.mark.slow
def test_searched_sweep_killed_mid_run_resumes_with_the_searchers_state(tmp_path, digits_root):
    from test_sweep import _launch, _rows

    storage = tmp_path / "sweeps"
    space = _yaml(tmp_path, algorithm="tpe", n=4, ep=2)
    common = ["--storage", str(storage), "--data-root", str(digits_root), "--num-cpus", "1"]
    proc = _launch(["sweep", "run", "--space", str(space), "--name", "k", "--mlflow-uri", "",
                    "--max-concurrent", "1", *common], tmp_path / "run.log")
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(_rows(storage, "k")) < 2:
            time.sleep(1)
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        done_before = _rows(storage, "k")
        assert 2 <= len(done_before) < 4
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list((storage / "k").glob("searcher-state-*.pkl")), "Tune saved the searcher"
    resume = _launch(["sweep", "resume", "k", *common[:-1], "2"], tmp_path / "resume.log")
    assert resume.wait(timeout=400) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    after = _rows(storage, "k")
    assert len(after) == 4  # none lost, none duplicated (one row per trial id)
    for tid, row in done_before.items():
        assert after[tid]["finished_at"] == row["finished_at"]
    from biohash.results import load_results

    table = load_results([str(storage / "k")])
    assert len(table) == 4 and table["trial_id"].is_unique
    # The restored study holds every draw, each told its result exactly once.
    import pickle

    state = pickle.loads(max((storage / "k").glob("searcher-state-*.pkl")).read_bytes())
    study = state["_studies"][0]._ot_study
    assert state["_issued"] == [4] and len(study.trials) == 4
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
