"""Checkpoints load with weights_only=True: code in a checkpoint file is never run."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from biohash.errors import ConfigError
from biohash.pipeline import checkpoint as ckpt


class _Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "latest.pt"
    torch.save({"model": {}, "evil": _Boom()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(ConfigError, match="not loaded"):
        ckpt.load(path)
    assert not (tmp_path / "PWNED").exists()


def test_rng_states_and_numpy_values_round_trip(tmp_path):
    np.random.seed(3)
    state = ckpt.rng_state()
    expected = np.random.rand(4)
    ckpt.save(tmp_path / "c.pt", {"rng": state, "val": np.float64(0.5), "arr": np.arange(3)})
    payload = ckpt.load(tmp_path / "c.pt")
    np.random.seed(99)
    ckpt.set_rng_state(payload["rng"])
    assert np.array_equal(np.random.rand(4), expected)
    assert payload["val"] == 0.5 and payload["arr"].tolist() == [0, 1, 2]
