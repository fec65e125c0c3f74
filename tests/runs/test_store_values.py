"""Stored metric values carry no float32 noise (issue 16), and a read-only reader reads a store."""

import numpy as np
import torch

from mmsec.runs import ResultsStore
from mmsec.runs.results import query
from mmsec.runs.store import clean_value


def test_clean_value_drops_float32_noise_only():
    assert clean_value(0.996999979019165) == 0.997
    noisy = torch.tensor([1, 0, 1], dtype=torch.float32).mean().item()  # 0.6666666865348816
    assert noisy != 2 / 3 and clean_value(noisy) == 0.6666667
    assert np.float32(clean_value(noisy)) == np.float32(noisy)  # the same float32: nothing real rounded away
    assert clean_value(2 / 3) == 2 / 3  # a float64 result is kept as it is
    assert clean_value(0.5) == 0.5 and clean_value(1e300) == 1e300 and clean_value(float("inf")) == float("inf")
    assert clean_value(None) is None and clean_value(3) == 3


def test_finished_values_are_stored_clean(tmp_path):
    cell = {"spec_name": "s", "model": "m", "seed": 0, "attack": {"name": "pgd", "params": {"eps": 0.1}}}
    with ResultsStore(tmp_path) as store:
        run_id = store.claim("h", cell, "sh")
        store.finish(run_id, {"metrics": [{"name": "clean_accuracy", "value": 0.996999979019165, "metric_version": 1,
                                           "threat_model": "clean", "definition": "d", "higher_is_better": True},
                                          {"name": "robust_accuracy", "value": 0.123456789012345,
                                           "metric_version": 1, "threat_model": "pgd", "definition": "d",
                                           "higher_is_better": True}],
                              "artifacts": [], "wall_time_s": 1.0})
        assert store.metrics(run_id) == {"clean_accuracy": 0.997, "robust_accuracy": 0.123456789012345}
    assert {r["metric"]: r["value"] for r in query(tmp_path)}["clean_accuracy"] == 0.997


def test_points_between_stored_values_carry_no_float_noise():
    import numpy as np

    from mmsec.runs.store import points

    assert points(1.0, float(np.float32(0.919))) == 8.1  # not 8.09999704...
    assert points(float(np.float32(0.999)), float(np.float32(0.966))) == 3.3
    assert points(0.5, 0.75) == -25.0
