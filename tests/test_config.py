"""TrialConfig: old run names, coercion, validation errors, round trips."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from biohash.catalog import REGISTRIES
from biohash.config import (CODE_TABLE_MAX_NBITS, FIELDS, NON_RESULT_FIELDS, TrialConfig,
                            check_field, effective_mode, field_name, parse_bio_scope)
from biohash.errors import ConfigError

SEED_NAME = ("-loss=DCH-nbits=32-trf=imagenet-arch=bio-vgg16-seed=0-bs=128-mode=fa-ep=20-pt=10"
             "-lr=1e-05-wd=0.0005-optim=adam-penalty=0.01-L2_penalty=0.0-HSWD_penalty=0.0")


def test_run_name_matches_the_old_workflow_exactly():
    cfg = TrialConfig(exp="bioexp", db="CIFAR_10", loss="DCH", nbits=32, arch="bio-vgg16",
                      bs=128, ep=20, mode="fa")
    assert cfg.run_name == SEED_NAME
    assert str(cfg.run_dir()) == f"models/PenaltyStrategies/CIFAR_10/bioexp/{SEED_NAME}"


def test_booleans_only_when_true_and_additions_only_when_not_default():
    base = TrialConfig()
    assert "no_cube" not in base.run_name and "bio_scope" not in base.run_name
    # h2q writes true booleans bare: "...-HSWD_penalty=0.0-no_cube"
    assert base.replace(no_cube=True).run_name.endswith("-HSWD_penalty=0.0-no_cube")
    assert "=True" not in base.replace(no_cube=True, no_skip=True).run_name
    named = base.replace(arch="bio-vgg16", bio_scope="head", weights="none").run_name
    assert named.endswith("-bio_scope=head-weights=none")
    assert "-nw=" not in base.replace(nw=4).run_name  # loader workers never change results


def test_precision_defaults_to_fp32_and_opt_ins_are_named():
    base = TrialConfig()
    assert base.precision == "fp32" and "precision" not in base.run_name
    assert base.replace(precision="bf16").run_name.endswith("-precision=bf16")
    assert base.hswd_sample == "random" and "hswd_sample" not in base.run_name
    assert base.replace(hswd_sample="balanced").run_name.endswith("-hswd_sample=balanced")
    # the biohash additions come after the old flags, hswd_sample last
    assert [f.name for f in FIELDS][-2:] == ["precision", "hswd_sample"]


def test_coercion_gives_identical_names_from_yaml_ints_and_cli_strings():
    a = TrialConfig(lr=1, penalty="0.5", nbits="16")
    b = TrialConfig(lr=1.0, penalty=0.5, nbits=16)
    assert a == b and a.run_name == b.run_name and "-lr=1.0-" in a.run_name
    assert a.trial_id == b.trial_id and len(a.trial_id) == 12


@pytest.mark.parametrize("changes, needle", [
    ({"nbits": 0}, "-nbits 0"), ({"lr": 0.0}, "-lr 0.0"), ({"lr": -1e-3}, "-lr -0.001"),
    ({"bs": 1}, "-bs 1"), ({"optim": "lbfgs"}, "adam, sgd, rmsprop"),
    ({"nbits": "x"}, "-nbits 'x'"), ({"nbits": 2.5}, "-nbits 2.5"),
    ({"no_cube": "maybe"}, "true/false"), ({"bio_scope": "head"}, "needs a bio-<arch>"),
    ({"arch": "bio-vgg16", "bio_scope": "neck=fa"}, "parts: backbone, head"),
    ({"no_skip": True, "soft_skip": True}, "-soft_skip"), ({"db": "a/b"}, "-db 'a/b'; allowed: letters, digits"),
    ({"exp": "a\x07b"}, "-exp 'a\\x07b'"), ({"exp": ".."}, "-exp '..'"),
    ({"nbits": 2**24}, "-nbits 16777216; allowed: an integer in 1..1,677,721"),
    ({"loss": "HyP2", "nbits": 257}, "-nbits 257 for -loss HyP2; allowed: 1..256"),
    ({"precision": "fp64"}, "fp32, bf16, fp16, auto"),
    ({"hswd_sample": "sorted"}, "-hswd_sample 'sorted'; allowed: random, balanced"),
])
def test_bad_values_are_one_line_errors_naming_the_value(changes, needle):
    with pytest.raises(ConfigError) as err:
        TrialConfig(**changes)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_keys_are_rejected_with_the_source():
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rat' in grid.yaml"):
        TrialConfig.from_dict({"learning_rat": 1e-3}, source="grid.yaml")
    # long aliases of the old flags are accepted
    assert TrialConfig.from_dict({"batch_size": 64, "experiment_name": "x"}).bs == 64


def test_registry_names_are_checked_by_validate():
    with pytest.raises(ConfigError, match="unknown arch 'resnet'"):
        TrialConfig(arch="resnet").validate()
    with pytest.raises(ConfigError, match="unknown loss 'XYZ'; choose from"):
        TrialConfig(loss="XYZ").validate()
    with pytest.raises(ConfigError, match="unknown mode 'zz'"):
        TrialConfig(mode="zz").validate()
    with pytest.raises(ConfigError, match="unknown dataset 'MNIST'"):
        TrialConfig(db="MNIST").validate()
    TrialConfig(db="DIGITS", arch="bio-hhnet-w18", mode="brsf").validate()


def test_save_and_load_round_trip(tmp_path):
    cfg = TrialConfig(db="DIGITS", arch="bio-cnn-small", mode="usf", bio_scope="backbone=bp,head=usf")
    cfg.save(tmp_path)
    assert TrialConfig.from_run_dir(tmp_path) == cfg
    assert json.loads((tmp_path / "config.json").read_text())["trial"]["mode"] == "usf"
    with pytest.raises(ConfigError, match="not a biohash run directory"):
        TrialConfig.from_run_dir(tmp_path / "nope")


def test_scopes_and_effective_mode():
    assert parse_bio_scope("all", "fa") == {"backbone": "fa", "head": "fa"}
    assert parse_bio_scope("head", "usf") == {"backbone": "bp", "head": "usf"}
    assert parse_bio_scope("backbone=frozen, head=fa", "usf") == {"backbone": "frozen", "head": "fa"}
    assert effective_mode("vgg16", "fa") == "bp" and effective_mode("bio-vgg16", "fa") == "fa"


def test_every_field_has_a_flag_and_help():
    assert [f.metadata["flag"] for f in FIELDS][:3] == ["exp", "db", "loss"]
    assert all(f.metadata["help"] for f in FIELDS)


def test_a_scope_that_freezes_every_part_is_refused():
    with pytest.raises(ConfigError, match="every part is frozen"):
        TrialConfig(arch="bio-vgg16", bio_scope="backbone=frozen,head=frozen")


def test_check_field_is_the_one_check_per_field():
    assert check_field("lr", "1e-3") == 1e-3 and check_field("arch", "bio-vgg16") == "bio-vgg16"
    assert check_field("bio_scope", "backbone=frozen,head=fa") == "backbone=frozen,head=fa"
    with pytest.raises(ConfigError, match=r"bad -lr nan; allowed: a finite number > 0"):
        check_field("lr", "nan")
    with pytest.raises(ConfigError, match=r"unknown arch 'vgg19'"):
        check_field("arch", "bio-vgg19")
    check_field("arch", "bio-vgg19", registry=False)  # registries only when asked
    with pytest.raises(ConfigError, match=r"unknown mode 'xx' for head"):
        check_field("bio_scope", "head=xx")
    with pytest.raises(ConfigError, match=r"unknown field 'learning_rat'"):
        check_field("learning_rat", 1)


def test_field_metadata_derives_the_non_result_fields_and_aliases():
    assert NON_RESULT_FIELDS == ("exp", "nw", "no_skip", "soft_skip")
    assert {f.name for f in FIELDS if f.metadata["registry"]} == {"db", "loss", "arch", "mode",
                                                                  "bio_scope"}
    assert field_name("batch_size") == "bs" and field_name("bs") == "bs"
    assert field_name("nope") is None


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_declared_registry_names_are_exactly_the_registered_builders(kind):
    registry = REGISTRIES[kind]
    loaded = registry.load()  # raises when the declared names and registrations differ
    assert registry.names() == loaded.names() and len(registry) > 0
    name = registry.names()[0]
    assert registry.get(name) is loaded.get(name)
    with pytest.raises(TypeError, match="register"):
        registry.register("x", object())


def test_code_table_limit_is_the_tables_last_row():
    from importlib import resources

    rows = resources.files("biohash.losses").joinpath("h2q-codetable.csv").read_text()
    last = [line for line in rows.splitlines() if line and line[0].isdigit()][-1]
    assert int(last.split(",")[0]) == CODE_TABLE_MAX_NBITS
    from biohash.losses import separation

    with pytest.raises(ConfigError):
        separation(CODE_TABLE_MAX_NBITS + 1, 10)


@pytest.mark.parametrize("first", ["biohash.config", "biohash.bio", "biohash.models",
                                   "biohash.losses", "biohash.catalog"])
def test_config_and_the_registries_import_in_any_order_without_torch(first):
    code = (f"import sys, {first}, biohash.config, biohash.bio, biohash.models, biohash.losses;"
            "from biohash.config import TrialConfig;"
            "TrialConfig(db='DIGITS', arch='bio-cnn-small', mode='usf').validate();"
            "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
