"""The Ray backend computes exactly what the sequential backend computes."""

import pytest
from runs_helpers import tiny_spec

from mmsec.runs import ResultsStore, run_spec

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MMSEC_QUIET": "1"}})
    yield
    if started:
        ray.shutdown()


def _stored(results):
    with ResultsStore(results) as store:
        runs = {r["cell_hash"]: r for r in store.runs()}
        metrics = {(runs_by_id["cell_hash"], m["name"]): (m["value"], m["threat_model"], m["definition"])
                   for runs_by_id in runs.values() for m in store.metric_rows(runs_by_id["run_id"])}
        arts = {(r["cell_hash"], a["kind"]): a["sha256"] for r in runs.values() for a in store.artifacts(r["run_id"])}
    return runs, metrics, arts


def test_ray_equals_sequential(ray_cluster, tmp_path):
    spec = tiny_spec(name="ray", attack={"name": "pgd", "params": {"eps": ["2/255", "8/255"], "alpha": "eps/2", "steps": 3}})
    seq = run_spec(spec, tmp_path / "seq", backend="sequential", quiet=True)
    par = run_spec(spec, tmp_path / "ray", backend="ray", quiet=True)
    assert [s["status"] for s in par] == ["done", "done"]
    assert [s["cell_hash"] for s in par] == [s["cell_hash"] for s in seq]
    assert [s["metrics"] for s in par] == [s["metrics"] for s in seq]  # exactly equal, not approximately
    runs_s, metrics_s, arts_s = _stored(tmp_path / "seq")
    runs_r, metrics_r, arts_r = _stored(tmp_path / "ray")
    assert metrics_r == metrics_s and len(metrics_r) == 2 * 5
    assert arts_r == arts_s  # bit-identical adversarial tensors and example grids
    assert all(r["status"] == "done" for r in runs_r.values())
    # and a second Ray run is a no-op too
    again = run_spec(spec, tmp_path / "ray", backend="ray", quiet=True)
    assert [s["status"] for s in again] == ["cached", "cached"]


def test_a_failing_cell_in_a_worker_is_recorded(ray_cluster, tmp_path):
    import shutil

    from mmsec.zoo import CHECKPOINTS

    # a tampered copy of a zoo checkpoint: its card's sha256 no longer matches, which only loading finds out
    tampered = tmp_path / "ckpt" / "tampered-clip.safetensors"
    tampered.parent.mkdir()
    shutil.copy(CHECKPOINTS / "shapes-clip-resnet.json", tampered.with_suffix(".json"))
    raw = bytearray((CHECKPOINTS / "shapes-clip-resnet.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    tampered.write_bytes(bytes(raw))
    spec = tiny_spec(name="ray-fail", model=["zoo:shapes-clip-resnet", f"zoo:{tampered}"],
                     attack={"name": "pgd", "params": {"eps": "4/255", "steps": 1}}, save_artifacts=False)
    out = run_spec(spec, tmp_path / "results", backend="ray", quiet=True)
    assert [s["status"] for s in out] == ["done", "failed"]
    assert "sha256 mismatch" in out[1]["error"]
    with ResultsStore(tmp_path / "results") as store:
        assert store.get_run(out[1]["cell_hash"])["status"] == "failed"


def test_missing_ray_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install "mmsec\[ray\]"'):
        run_spec(tiny_spec(name="noray"), tmp_path, backend="ray", quiet=True)
    with pytest.raises(ValueError, match="backend must be one of"):
        run_spec(tiny_spec(name="noray"), tmp_path, backend="dask", quiet=True)
