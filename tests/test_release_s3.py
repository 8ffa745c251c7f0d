"""The release end-to-end test against a real local S3 server (SeaweedFS, tests/s3_server.py).

The dataset root is ``s3://bucket/prefix``: build (in a local mirror, pushed to S3), release 1.0.0,
change the corpus, ingest, release 1.1.0, verify both, diff, re-run without changes, open a released
store with plain xarray straight from S3.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pipeline.cli import main as cli_main
from pipeline.demo import generate_corpus
from pipeline.release import diff_releases, list_releases, publish, read_manifest, read_sequences, verify
from pipeline.split import SUBSETS
from pipeline.store.location import LockError, open_location

pytestmark = pytest.mark.slow


def remote_digest(loc, prefix_filter=lambda rel: True) -> dict:
    """{object: sha256} of the current stores on the remote root."""
    return {f"{s}.zarr/{rel}": loc.sha256(f"{s}.zarr/{rel}") for s in SUBSETS for rel, _ in loc.walk(f"{s}.zarr")}


@pytest.fixture(scope="module")
def prefect():
    from flows.runtime import prefect_api

    with prefect_api() as url:
        yield url


@pytest.fixture(scope="module")
def s3_history(s3_root, tmp_path_factory, prefect):
    base = tmp_path_factory.mktemp("s3release")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DYNASET_WORK_DIR", str(base / "work"))
        corpus = base / "corpus"
        files = sorted(generate_corpus(corpus, n_subjects=1, seed=5))
        assert cli_main(["build", "--source", f"amass={corpus}", "--out", s3_root, "--no-simulate",
                         "--workers", "1"]) == 0
        loc = open_location(s3_root)
        v1_objects = remote_digest(loc)
        assert cli_main(["release", "--root", s3_root, "--version", "1.0.0"]) == 0

        added = corpus / "DynasetSynth" / "S42" / "extra_poses.npz"
        added.parent.mkdir()
        shutil.copyfile(files[0], added)
        changed, removed = files[1], files[2]
        data = dict(np.load(changed, allow_pickle=False))
        data["trans"] = data["trans"] + np.array([0.0, 0.3, 0.0])
        np.savez(changed, **data)
        removed.unlink()
        # a fresh working mirror: the remote root is the truth (ledger pulled, files re-hashed)
        shutil.rmtree(base / "work")
        assert cli_main(["ingest", s3_root, "--workers", "1"]) == 0
        v2_objects = remote_digest(loc)
        publish(loc, "1.1.0")
        assert cli_main(["ingest", s3_root, "--workers", "1"]) == 0
        yield {"root": s3_root, "loc": loc, "corpus": corpus, "added": added, "changed": changed,
               "removed": removed, "v1": v1_objects, "v2": v2_objects, "n": len(files)}


def test_s3_releases_verify_and_diff(s3_history):
    loc = s3_history["loc"]
    assert list_releases(loc) == ["1.0.0", "1.1.0"]
    assert verify(loc, "1.0.0") == []
    assert verify(loc, "1.1.0") == []
    assert cli_main(["verify", "--root", s3_history["root"], "1.0.0", "1.1.0"]) == 0
    # 1.0.0's store objects are exactly what the first build pushed
    m1 = read_manifest(loc, "1.0.0")
    assert {k: v["sha256"] for k, v in m1["objects"].items() if ".zarr/" in k} == s3_history["v1"]
    d = diff_releases(m1, read_manifest(loc, "1.1.0"), read_sequences(loc, "1.0.0"), read_sequences(loc, "1.1.0"))
    motion = d["subsets"]["motion"]
    c = s3_history["corpus"]
    seqs, old = read_sequences(loc, "1.1.0")["motion"], read_sequences(loc, "1.0.0")["motion"]
    assert motion["added"] == [k for k, v in seqs.items() if v["path"] == s3_history["added"].relative_to(c).as_posix()]
    assert motion["removed"] == [k for k, v in old.items()
                                 if v["path"] == s3_history["removed"].relative_to(c).as_posix()]
    assert motion["changed"] == [k for k, v in seqs.items()
                                 if v["path"] == s3_history["changed"].relative_to(c).as_posix()]


def test_s3_rerun_changes_nothing(s3_history):
    loc = s3_history["loc"]
    assert remote_digest(loc) == s3_history["v2"]
    from pipeline.store.ledger import Ledger

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        loc.get_file("ledger.sqlite", Path(tmp) / "ledger.sqlite")
        with Ledger(Path(tmp) / "ledger.sqlite") as ledger:
            runs = ledger.runs()
    n = s3_history["n"]
    assert [(r.files_new, r.files_changed, r.files_removed, r.stores_written) for r in runs] == [
        (n, 0, 0, 4), (1, 1, 1, 4), (0, 0, 0, 0)]


def test_s3_release_opens_with_plain_xarray(s3_history):
    import xarray as xr

    loc = s3_history["loc"]
    url, options = loc.zarr_target("releases/1.1.0/motion.zarr")
    ds = xr.open_zarr(url, storage_options=options)
    assert ds.attrs["schema_name"] == "motion"
    assert ds.sizes["sequence"] == s3_history["n"]
    assert np.isfinite(ds.joint_pos_m.isel(frame=slice(0, 10)).values).all()


def test_s3_second_writer_refused(s3_history):
    loc = s3_history["loc"]
    with loc.lock("build"):
        with pytest.raises(LockError):
            publish(open_location(s3_history["root"]), "2.0.0")
    assert list_releases(loc) == ["1.0.0", "1.1.0"]
