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


@pytest.mark.parametrize("cut", [0, 0.5])
def test_an_empty_or_truncated_checkpoint_is_a_one_line_error_and_no_resume_point(
        tmp_path, caplog, cut):
    from biohash.config import TrialConfig
    from biohash.pipeline.run import resume_point

    path = tmp_path / "run" / ckpt.CHECKPOINT_DIR / ckpt.LATEST
    path.parent.mkdir(parents=True)
    ckpt.save(path, {"model": {"w": torch.zeros(256)}})
    assert ckpt.is_complete(path) and resume_point(TrialConfig(), tmp_path / "run") == path.parent
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(ConfigError, match=r"latest.pt' is empty or truncated; delete it"):
        ckpt.load(path)
    assert resume_point(TrialConfig(), tmp_path / "run") is None  # starts afresh, with a warning
    assert "truncated" in caplog.text


@pytest.mark.parametrize("text", ["", '{"train": "fini'])
def test_a_damaged_status_file_reads_as_missing(tmp_path, caplog, text):
    from biohash.config import TrialConfig
    from biohash.pipeline.run import STATUS_FILE, read_status, skip_reason, write_status

    (tmp_path / STATUS_FILE).write_text(text)
    assert read_status(tmp_path) == {} and "damaged" in caplog.text
    assert skip_reason(TrialConfig(), tmp_path) is None  # the run is not taken as done
    write_status(tmp_path, train="running")  # and the bookkeeping goes on
    assert read_status(tmp_path)["train"] == "running"
