"""Search spaces: shipped files, expansion semantics, errors, planning."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from biohash.config import TrialConfig, base_arch, parse_bio_scope
from biohash.errors import ConfigError
from biohash.search_spaces import (MAX_TRIALS, SPACES, SearchSpace, load_space, plan,
                                   trial_gpu_seconds)
from biohash.search_spaces.plan import PRECISION_SLOWDOWN

SHIPPED = ["bio-lr", "demo", "demo-search", "h2q-table", "hhnet", "hybrid", "paper-grid",
           "seed-bioexp"]


def space(raw, name="t"):
    return SearchSpace.from_dict(raw, name=name, source="bad.yaml")


def trials(raw):
    return space(raw).expand(validate=False)


# ----------------------------------------------------------------- shipped
def test_shipped_names():
    assert SPACES.names() == SHIPPED


@pytest.mark.parametrize("name", SPACES.names())
def test_every_shipped_space_loads_expands_and_validates(name):
    sp = load_space(name)
    assert sp.name == name and sp.source == f"{name}.yaml" and sp.path.is_file()
    assert sp.path.read_text().startswith("# A biohash search space")  # docs comment
    assert sp.description and "\n" not in sp.description
    cfgs = sp.expand(validate=True)  # registry names checked
    assert cfgs and all(isinstance(c, TrialConfig) for c in cfgs)
    assert len({c.trial_id for c in cfgs}) == len(cfgs)
    assert sp.axes and all(len(v) > 1 for v in sp.axes.values())
    assert sp.expand(validate=False) == cfgs and sp.expand() is not sp.expand()


def test_demo():
    cfgs = load_space("demo").expand()
    assert len(cfgs) == 16
    assert {(c.db, c.arch, c.weights, c.exp) for c in cfgs} == {
        ("DIGITS", "bio-cnn-small", "none", "demo")}
    assert load_space("demo").axes == {"loss": ["DCH", "DPSH"], "nbits": [16, 32],
                                       "mode": ["bp", "fa", "usf", "frsf"]}


def test_seed_bioexp_reproduces_the_fork_run_names():
    cfgs = load_space("seed-bioexp").expand()
    assert len(cfgs) == 36
    names = {c.run_name for c in cfgs if c.db == "CIFAR_10"}
    assert ("-loss=DCH-nbits=32-trf=imagenet-arch=bio-vgg16-seed=0-bs=128-mode=fa-ep=20-pt=10"
            "-lr=1e-05-wd=0.0005-optim=adam-penalty=0.01-L2_penalty=0.0-HSWD_penalty=0.0") in names
    assert {(c.db, c.loss, c.mode) for c in cfgs} == {
        (db, loss, mode) for db in ("CIFAR_10", "NUS_WIDE", "MS_COCO", "ImageNet")
        for loss in ("DCH", "HyP2", "DPSH") for mode in ("fa", "frsf", "usf")}
    assert {c.exp for c in cfgs} == {"bioexp"}


#: h2q's run_QS.sh, per dataset and arch: (loss, bs, wd, no_cube, penalties), one entry per
#: block of the script; every block: lr 1e-5, 100 epochs, patience 20, Adam.
RUN_QS = [("HyP2", 100, 5e-4, True, (0.5, 0.75, 1.0, 1.25)), ("WGLHH", 64, 1e-4, True, (0.0,)),
          ("HashNet", 256, 5e-4, True, (0.0,)), ("DCH", 256, 5e-4, True, (0.0,)),
          ("DHN", 64, 5e-4, True, (0.0,)), ("WGLHH", 64, 1e-4, False, (0.001,)),
          ("DCH", 256, 5e-4, False, (1e-5, 1e-3, 0.1)), ("DHN", 64, 5e-4, False, (1e-5, 1e-3, 0.1)),
          ("CEL", 128, 5e-4, True, (0.0,)), ("DPSH", 128, 5e-4, True, (0.0,)),
          ("DPSH", 128, 5e-4, False, (1.0, 0.1, 0.01))]
DBS = ("CIFAR_10", "NUS_WIDE", "MS_COCO", "ImageNet")
RULES = ("bp", "fa", "usf", "frsf", "brsf", "dfa")


@pytest.fixture(scope="module")
def paper_grid():
    """The paper grid, expanded once for the tests that read it (15,360 trials)."""
    sp = load_space("paper-grid")
    sp.expand(validate=False)
    return sp


def test_paper_grid_is_h2q_run_script_for_every_rule(paper_grid):
    sp = paper_grid
    cfgs = sp.expand(validate=False)
    arms = {(loss, bs, wd, no_cube, pen) for loss, bs, wd, no_cube, pens in RUN_QS for pen in pens}
    assert len(arms) == 20
    expected = {(db, arch, rule, nbits, seed, *arm) for db in DBS for arch in ("alexnet", "vgg16")
                for rule in RULES for nbits in (16, 32, 48, 64) for seed in range(4)
                for arm in arms}
    got = [(c.db, base_arch(c.arch), c.effective_mode, c.nbits, c.seed, c.loss, c.bs, c.wd,
            c.no_cube, c.penalty) for c in cfgs]
    assert len(got) == len(set(got)) == 15360 and set(got) == expected
    assert sp.trials_per_rule == {rule: 2560 for rule in RULES}
    # bp on the plain archs (h2q's own runs), the other rules on the bio- wrapper
    assert {(c.arch, c.mode) for c in cfgs} == {
        *((arch, "bp") for arch in ("alexnet", "vgg16")),
        *((f"bio-{arch}", rule) for arch in ("alexnet", "vgg16") for rule in RULES[1:])}
    assert {(c.lr, c.ep, c.pt, c.optim, c.exp, c.L2_penalty, c.HSWD_penalty, c.soft_skip)
            for c in cfgs} == {(1e-5, 100, 20, "adam", "rotation_experiment", 0.0, 0.0, False)}
    names = {c.run_name for c in cfgs if c.db == "CIFAR_10"}
    # h2q's run name of its -loss DCH -nbits 32 -bs 256 ... -penalty 0.0 -no_cube block (seed 0),
    # with the fork's -mode
    assert ("-loss=DCH-nbits=32-trf=imagenet-arch=vgg16-seed=0-bs=256-mode=bp-ep=100-pt=20"
            "-lr=1e-05-wd=0.0005-optim=adam-penalty=0.0-L2_penalty=0.0-HSWD_penalty=0.0-no_cube"
            ) in names
    assert [c.seed for c in cfgs[:3]] == [0, 0, 0] and cfgs[-1].seed == 3  # seed-major


def test_h2q_table_is_the_published_runs_and_a_slice_of_the_paper_grid(paper_grid):
    cfgs = load_space("h2q-table").expand(validate=False)
    assert len(cfgs) == 320 and load_space("h2q-table").trials_per_rule == {"bp": 320}
    assert {(c.arch, c.mode, c.lr, c.ep, c.pt, c.optim, c.wd) for c in cfgs} == {
        ("vgg16", "bp", 1e-5, 100, 20, "adam", 5e-4)}
    arms = {(c.db, c.loss, c.bs, c.no_cube, c.penalty) for c in cfgs}
    assert arms == {arm for db in DBS for arm in [
        (db, "HashNet", 256, True, 0.0),
        (db, "HyP2", 100, True, 0.75 if db == "NUS_WIDE" else 1.25),
        *((db, "DPSH", 128, False, pen) for pen in (1.0, 0.1, 0.01))]}
    assert {(c.nbits, c.seed) for c in cfgs} == {(n, s) for n in (16, 32, 48, 64) for s in range(4)}
    paper = {c.trial_id for c in paper_grid.expand(validate=False)}
    assert {c.trial_id for c in cfgs} <= paper  # the same runs, the same trial ids


def test_hybrid_scopes_are_distinct_and_include_the_bp_baseline():
    cfgs = load_space("hybrid").expand()
    parts = [tuple(sorted(parse_bio_scope(c.bio_scope, c.effective_mode).items())) for c in cfgs]
    assert len(cfgs) == 14 == len(set(parts))  # 4 (all) + 3 + 3 + 4 frozen-backbone
    assert (("backbone", "bp"), ("head", "bp")) in parts  # the baseline
    assert (("backbone", "frozen"), ("head", "bp")) in parts
    assert {c.arch for c in cfgs} == {"bio-vgg16"}


# --------------------------------------------------------------- semantics
def test_overrides_set_and_subgrid_in_order():
    cfgs = trials({
        "grid": {"loss": ["DCH", "HyP2", "DPSH"], "nbits": [16, 32]},
        "overrides": [
            {"when": {"loss": "HyP2"}, "set": {"bs": 100}},
            {"when": {"loss": "DCH"}, "grid": {"penalty": [1.0e-5, "1e-3", 0.1]}},
            {"when": {"loss": ["DCH", "HyP2"], "nbits": 32}, "set": {"ep": 3}},
            {"when": {"bs": 100}, "set": {"lr": 1}},  # sees the earlier override's value
        ]})
    assert len(cfgs) == 3 * 2 + 2 + 2
    dch = [c for c in cfgs if c.loss == "DCH"]
    assert sorted({c.penalty for c in dch}) == [1e-5, 1e-3, 0.1]
    assert {(c.bs, c.lr) for c in cfgs if c.loss == "HyP2"} == {(100, 1.0)}
    assert {c.bs for c in cfgs if c.loss != "HyP2"} == {16}
    assert {(c.loss, c.nbits) for c in cfgs if c.ep == 3} == {("DCH", 32), ("HyP2", 32)}


def test_override_arms_are_alternatives_with_the_override_set_and_grid():
    cfgs = trials({
        "grid": {"loss": ["DCH", "CEL"]},
        "overrides": [{"when": {"loss": "DCH"}, "set": {"bs": 256}, "grid": {"nbits": [16, 32]},
                       "arms": [{"set": {"no_cube": True, "penalty": 0.0}},
                                {"set": {"no_cube": False}, "grid": {"penalty": [1e-5, 0.1]}}]},
                      {"when": {"no_cube": True}, "set": {"ep": 3}}]})  # sees the arms' values
    got = [(c.loss, c.bs, c.nbits, c.no_cube, c.penalty, c.ep) for c in cfgs]
    assert got == [  # arms in order; within an arm the override's grid, then the arm's
        ("DCH", 256, 16, True, 0.0, 3), ("DCH", 256, 32, True, 0.0, 3),
        ("DCH", 256, 16, False, 1e-5, 10), ("DCH", 256, 16, False, 0.1, 10),
        ("DCH", 256, 32, False, 1e-5, 10), ("DCH", 256, 32, False, 0.1, 10),
        ("CEL", 16, 32, False, 0.01, 10)]


def test_exclusions_and_defaults_in_conditions():
    cfgs = trials({
        "fixed": {"arch": "bio-alexnet"},
        "grid": {"mode": ["bp", "fa", "dfa"], "nbits": [16, 32, 64]},
        "exclude": [{"mode": "dfa", "nbits": [16, 32]}, {"nbits": 64, "mode": ["bp", "fa"], "loss": "DSH"}],
    })  # loss is never named: its default DSH matches
    assert sorted((c.mode, c.nbits) for c in cfgs) == [
        ("bp", 16), ("bp", 32), ("dfa", 64), ("fa", 16), ("fa", 32)]


def test_seeds_and_repeats():
    by_seeds = trials({"grid": {"nbits": [16, 32]}, "seeds": [3, 7]})
    assert [(c.seed, c.nbits) for c in by_seeds] == [(3, 16), (3, 32), (7, 16), (7, 32)]
    assert [c.seed for c in trials({"repeats": 3})] == [0, 1, 2]
    assert [c.seed for c in trials({"grid": {"seed": [0, 5]}})] == [0, 5]
    assert [c.seed for c in trials({"fixed": {"nbits": 16}})] == [0]


def test_long_aliases_and_axes():
    sp = space({"fixed": {"batch_size": 32, "epochs": 2},
                "grid": {"learning_rate": [1.0e-4, 1.0e-3], "architecture": ["alexnet", "vgg16"]}})
    cfgs = sp.expand(validate=False)
    assert {(c.bs, c.ep) for c in cfgs} == {(32, 2)}
    assert sp.axes == {"arch": ["alexnet", "vgg16"], "lr": [1e-4, 1e-3]}


def test_user_file_by_path(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("description: mine\ngrid:\n  nbits: [16, 32]\n")
    sp = load_space(str(path))
    assert (sp.name, sp.path, sp.description) == ("mine", path, "mine")
    assert len(sp.expand(validate=False)) == 2
    monkeypatch.chdir(tmp_path)
    assert load_space("mine.yaml").source == "mine.yaml"


# ------------------------------------------------------------------ errors
FIELD_LIST = "choose from exp, db, loss, nbits, trf, arch, seed, bs, mode"


@pytest.mark.parametrize("raw, message", [
    ([1, 2], "bad.yaml: expected a mapping of description, fixed, grid"),
    ({"gird": {"nbits": [16]}}, "bad.yaml: gird: unknown top-level key; choose from "
                                "description, fixed, grid, sample, overrides, exclude, seeds, "
                                "repeats, search"),
    ({"grid": {"modes": ["fa"]}}, f"bad.yaml: grid.modes: unknown field; {FIELD_LIST}"),
    ({"fixed": {"nbits": "many"}}, "bad.yaml: fixed.nbits: bad -nbits 'many'; allowed: an integer"),
    ({"fixed": {"no_cube": "maybe"}}, "bad.yaml: fixed.no_cube: bad -no_cube 'maybe'; "
                                      "allowed: true/false"),
    ({"fixed": {"nbits": [16, 32]}}, "bad.yaml: fixed.nbits: expected a single value"),
    ({"fixed": {"db": None}}, "bad.yaml: fixed.db: expected a single value (text, number or "
                              "true/false), got nothing (null)"),
    ({"grid": {"nbits": 16}}, "bad.yaml: grid.nbits: expected a list of values, got 16"),
    ({"grid": {"nbits": []}}, "bad.yaml: grid.nbits: the list of values is empty"),
    ({"grid": {"nbits": [16, 16.0]}}, "bad.yaml: grid.nbits: value 16.0 is listed twice"),
    ({"grid": {"lr": [0.1, -1]}}, "bad.yaml: grid.lr: bad -lr -1.0; allowed: a finite number > 0"),
    ({"grid": {"optim": ["adam", "lion"]}}, "bad.yaml: grid.optim: bad -optim 'lion'; "
                                            "allowed: adam, sgd, rmsprop"),
    ({"fixed": {"bs": 8}, "grid": {"batch_size": [16]}}, "bad.yaml: grid.batch_size: is also "
                                                         "fixed"),
    ({"grid": {"bs": [16], "batch_size": [32]}}, "bad.yaml: grid.batch_size: names the same "
                                                 "field as grid.bs"),
    ({"description": ["a"]}, "bad.yaml: description: expected one line of text"),
    ({"overrides": {"when": {}}}, "bad.yaml: overrides: expected a list of entries"),
    ({"overrides": [{"set": {"bs": 8}}]}, "bad.yaml: overrides[0]: needs a non-empty `when`"),
    ({"overrides": [{"when": {"loss": "DCH"}}]},
     "bad.yaml: overrides[0]: needs `set`, `grid` and/or `arms`"),
    ({"overrides": [{"when": {"loss": "DCH"}, "sett": {"bs": 8}}]},
     "bad.yaml: overrides[0].sett: unknown key; choose from when, set, grid, arms"),
    ({"overrides": [{"when": {"loss": "DCH"}, "set": {"bs": 8}, "arms": []}]},
     "bad.yaml: overrides[0].arms: the list of arms is empty"),
    ({"overrides": [{"when": {"loss": "DCH"}, "arms": {"set": {"bs": 8}}}]},
     "bad.yaml: overrides[0].arms: expected a list of entries"),
    ({"overrides": [{"when": {"loss": "DCH"}, "arms": [{"set": {"bs": 8}}, "x"]}]},
     "bad.yaml: overrides[0].arms[1]: expected a mapping with `set` and/or `grid`"),
    ({"overrides": [{"when": {"loss": "DCH"}, "arms": [{"when": {"bs": 8}}]}]},
     "bad.yaml: overrides[0].arms[0].when: unknown key; choose from set, grid"),
    ({"overrides": [{"when": {"loss": "DCH"}, "arms": [{"set": {}}]}]},
     "bad.yaml: overrides[0].arms[0]: needs `set` and/or `grid`"),
    ({"overrides": [{"when": {"loss": "DCH"}, "set": {"bs": 8},
                     "arms": [{"set": {"batch_size": 9}}]}]},
     "bad.yaml: overrides[0].arms[0].set.batch_size: is also in overrides[0]'s set/grid"),
    ({"overrides": [{"when": {"loss": "DCH"}, "grid": {"bs": [8, 9]},
                     "arms": [{"grid": {"bs": [10]}}]}]},
     "bad.yaml: overrides[0].arms[0].grid.bs: is also in overrides[0]'s set/grid"),
    ({"overrides": [{"when": {"loss": "DCH"}, "arms": [{"set": {"bs": "x"}}]}]},
     "bad.yaml: overrides[0].arms[0].set.bs: bad -bs 'x'"),
    ({"overrides": [{"when": {"loss": "DCH"}, "arms": [{"set": {"bs": 8}, "grid": {"bs": [9]}}]}]},
     "bad.yaml: overrides[0].arms[0].grid.bs: is also fixed"),
    ({"overrides": [{"when": {"loss": "DCH"}, "arms": [{"set": {"bs": 8}}, {"set": {"bs": 8.0}}]}]},
     "bad.yaml: overrides[0].arms[1]: repeats overrides[0].arms[0]"),
    ({"overrides": [{"when": {"loss": "DCH"}, "arms": [{"grid": {"seed": [1, 2]}}]}],
      "seeds": [0]}, "bad.yaml: seeds: seed is also set in overrides[0]"),
    ({"overrides": [{"when": {"los": "DCH"}, "set": {"bs": 8}}]},
     f"bad.yaml: overrides[0].when.los: unknown field; {FIELD_LIST}"),
    ({"overrides": [{"when": {"loss": "DCH"}, "grid": {"bs": 8}}]},
     "bad.yaml: overrides[0].grid.bs: expected a list of values"),
    ({"exclude": [["mode", "fa"]]}, "bad.yaml: exclude[0]: expected a non-empty mapping"),
    ({"exclude": [{"nbits": "x"}]}, "bad.yaml: exclude[0].nbits: bad -nbits 'x'"),
    ({"seeds": [0], "repeats": 2}, "bad.yaml: repeats: give either `seeds` or `repeats`"),
    ({"repeats": 0}, "bad.yaml: repeats: expected an integer >= 1"),
    ({"seeds": [0, -1]}, "bad.yaml: seeds: bad -seed -1; allowed: an integer >= 0"),
    ({"grid": {"seed": [0, 1]}, "seeds": [2]}, "bad.yaml: seeds: seed is also set in grid"),
    ({"fixed": {"arch": "bio-alexnet", "bio_scope": "body=fa"}},
     "bad.yaml: fixed.bio_scope: bad -bio_scope 'body=fa'; allowed: all, backbone, head"),
    (None, "bad.yaml: the file is empty"),
])
def test_bad_space_is_a_one_line_config_error(raw, message):
    with pytest.raises(ConfigError) as info:
        space(raw)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("raw, message", [
    ({"grid": {"mode": ["fa", "dfa"]}, "exclude": [{"mode": ["fa", "dfa"]}]},
     "bad.yaml: the space is empty: exclude removes all 2 trials"),
    ({"grid": {"bio_scope": ["all", "head"]}},  # default arch alexnet is not a bio arch
     "bad.yaml: trial bio_scope=head: bad -bio_scope 'head' for -arch 'alexnet'"),
    ({"grid": {"nw": [1, 2]}}, "bad.yaml: two trials are the same run CIFAR_10/default/-loss=DSH"),
    ({"grid": {"loss": ["DCH", "DPSH"]},
      "overrides": [{"when": {"loss": "DPSH"}, "set": {"loss": "DCH"}}]},
     "bad.yaml: two trials are the same run"),
    ({"fixed": {"arch": "bio-alexnet", "mode": "fa"},
      "grid": {"bio_scope": ["head", "backbone=bp,head=fa"]}},
     "bad.yaml: two trials train the same parts with the same rules (backbone=bp, head=fa)"),
    ({"grid": {"mode": ["fa", "usf"]}},  # a plain arch ignores -mode: both are backprop
     "bad.yaml: two trials train the same parts with the same rules (backbone=bp, head=bp)"),
])
def test_expansion_errors(raw, message):
    sp = space(raw)  # well-formed: the problem only shows when expanded
    with pytest.raises(ConfigError) as info:
        sp.expand(validate=False)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("raw, message", [
    ({"grid": {"mode": ["fa", "fx"]}, "fixed": {"arch": "bio-alexnet"}},
     "demo.yaml: grid.mode: unknown mode 'fx'; choose from bp, brsf, dfa, fa, frsf, usf"),
    ({"fixed": {"arch": "bio-vgg19"}}, "demo.yaml: fixed.arch: unknown arch 'vgg19'; choose from "),
    ({"grid": {"db": ["CIFAR_10", "CIFAR_100"]}},
     "demo.yaml: grid.db: unknown dataset 'CIFAR_100'; choose from "),
    ({"overrides": [{"when": {"nbits": 32}, "grid": {"loss": ["DCH", "dch"]}}]},
     "demo.yaml: overrides[0].grid.loss: unknown loss 'dch'; choose from "),
    ({"exclude": [{"loss": "Hyp2"}]}, "demo.yaml: exclude[0].loss: unknown loss 'Hyp2'"),
    ({"fixed": {"arch": "bio-alexnet", "bio_scope": "backbone=frozen,head=fx"}},
     "demo.yaml: fixed.bio_scope: bad -bio_scope 'backbone=frozen,head=fx': unknown mode "
     "'fx' for head; choose from bp, "),
])
def test_registry_names_are_checked_only_when_validating(raw, message):
    sp = SearchSpace.from_dict(raw, name="demo", source="demo.yaml")
    sp.expand(validate=False)
    with pytest.raises(ConfigError) as info:
        sp.expand(validate=True)
    assert str(info.value).startswith(message), str(info.value)


def test_unknown_space_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown search space 'dmeo'; choose from bio-lr, "
                                          "demo, demo-search, h2q-table, hhnet, hybrid, "
                                          "paper-grid, seed-bioexp, or give the path"):
        load_space("dmeo")
    with pytest.raises(ConfigError, match="no search space file .*nope.yaml.*shipped space: bio-lr, demo"):
        load_space(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "broken.yaml"
    bad.write_text("grid: {nbits: [16, 32\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML: "):
        load_space(str(bad))


# ---------------------------------------------------------------- planning
def test_plan_flags_missing_data_and_estimates_gpu_hours(tmp_path):
    p = plan(load_space("hybrid"), data_root=str(tmp_path / "nowhere"))
    assert p.n_trials == 14 and p.axes == load_space("hybrid").axes
    assert not p.data["CIFAR_10"].ready
    assert len(p.problems) == 1 and "CIFAR_10" in p.problems[0]
    assert 0.5 < p.gpu_hours < 50
    text = p.render()
    for part in ("search space 'hybrid' (hybrid.yaml): 14 trials", "bio_scope", "MISSING",
                 "GPU-hours", "problems (the sweep will not launch)", p.problems[0]):
        assert part in text


def test_plan_of_an_auto_built_dataset_has_no_problems(tmp_path):
    p = plan(load_space("demo"), data_root=str(tmp_path))
    assert p.problems == [] and p.data["DIGITS"].auto and 0 < p.gpu_hours < 0.1
    assert "built on first use" in p.render() and "problems" not in p.render()


def test_cost_model_orders_archs_rules_and_epochs():
    sizes = {"train": 5000, "query": 1000, "val": 1000, "database": 53000}
    base = TrialConfig(arch="bio-vgg16", mode="bp")
    cost = lambda **kw: trial_gpu_seconds(base.replace(**kw), sizes)  # noqa: E731
    assert cost() > cost(arch="bio-alexnet") > 0
    assert cost(mode="fa") > cost() and cost(mode="brsf") > cost(mode="fa")
    # (ep x train/300 img/s + ep x val fold/1000 + all 60k items/1000) (vgg16 row, bp), each
    # x the fp32 slowdown: training at the default precision fp32, predict/validation always
    fp32 = PRECISION_SLOWDOWN["fp32"]
    assert cost() == pytest.approx(fp32 * (10 * 5000 / 300 + 10 * 1000 / 1000 + 60000 / 1000))
    step = cost(ep=20) - cost(ep=10)
    assert step > 0 and cost(ep=30) - cost(ep=20) == pytest.approx(step)


# -------------------------------------------------------------- imports
def test_import_expansion_and_name_checks_stay_torch_and_ray_free():
    code = ("import sys, biohash.search_spaces as s; s.load_space('paper-grid').expand(True);"
            "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "[]"


def test_an_override_or_exclusion_that_matches_nothing_is_logged(caplog):
    cfgs = trials({"grid": {"loss": ["DCH", "DPSH"]},
                   "overrides": [{"when": {"loss": "HyP2"}, "set": {"bs": 100}}],
                   "exclude": [{"loss": "DPSH"}, {"nbits": 64}]})
    assert [c.loss for c in cfgs] == ["DCH"]
    assert [r.getMessage() for r in caplog.records] == [
        "bad.yaml: overrides[0] matches no trial", "bad.yaml: exclude[1] matches no trial"]


# -------------------------------------------------------------- size limit
def test_a_grid_past_the_limit_is_refused_with_its_count_before_it_is_built():
    # 10 x 10 x 10 x 10 x 10 x 2 = 200,000 > 100,000: refused while counting, and
    # the message says the limit and the count.
    raw = {"grid": {"seed": list(range(10)), "nbits": list(range(8, 18)),
                    "bs": list(range(2, 12)), "ep": list(range(1, 11)),
                    "pt": list(range(1, 11)), "loss": ["DCH", "DPSH"]}}
    with pytest.raises(ConfigError, match=r"past the limit of 100,000 trials per space "
                                          r"\(more than 100,000, up to 200,000\)"):
        SearchSpace.from_dict(raw, name="huge").expand(validate=False)


def test_repeats_and_draws_past_the_limit_are_refused_while_parsing():
    with pytest.raises(ConfigError, match=r"repeats: 1,000,000,000 seeds pass the limit of "
                                          r"100,000"):
        SearchSpace.from_dict({"fixed": {"db": "DIGITS"}, "repeats": 10**9}, name="r")
    with pytest.raises(ConfigError, match=r"search.num_samples: 100,001 draws"):
        SearchSpace.from_dict({"sample": {"lr": {"loguniform": [1e-5, 1e-3]}},
                               "search": {"num_samples": MAX_TRIALS + 1}}, name="s")


def test_a_space_at_the_limit_expands():
    raw = {"grid": {"nbits": list(range(8, 18)), "bs": list(range(2, 12)),
                    "ep": list(range(1, 11))}, "repeats": 100}
    assert SearchSpace.from_dict(raw, name="edge").n_trials == MAX_TRIALS
