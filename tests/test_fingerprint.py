"""The code fingerprint that enters the processing key (pipeline.fingerprint)."""

from pathlib import Path

import pytest

from pipeline import fingerprint
from pipeline.dataset import config as dataset_config
from pipeline.simulate import engine


def _tree(root: Path, files: dict[str, str]) -> tuple[Path, ...]:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return (root / "pkg",)


def test_fingerprint_changes_with_any_source_byte_and_ignores_caches(tmp_path):
    roots = _tree(tmp_path, {"pkg/a.py": "x = 1\n", "pkg/sub/b.py": "y = 2\n", "pkg/s.json": "{}"})
    base = fingerprint.fingerprint_of(fingerprint.source_files(roots))
    assert [n for n, _ in fingerprint.source_files(roots)] == ["pkg/a.py", "pkg/s.json", "pkg/sub/b.py"]
    (tmp_path / "pkg/__pycache__").mkdir()
    (tmp_path / "pkg/__pycache__/a.cpython-311.pyc").write_bytes(b"\0junk")
    (tmp_path / "pkg/notes.md").write_text("not code")
    assert fingerprint.fingerprint_of(fingerprint.source_files(roots)) == base
    (tmp_path / "pkg/sub/b.py").write_text("y = 3\n")
    edited = fingerprint.fingerprint_of(fingerprint.source_files(roots))
    assert edited != base
    (tmp_path / "pkg/sub/b.py").write_text("y = 2\n")
    (tmp_path / "pkg/sub/c.py").write_text("")
    assert fingerprint.fingerprint_of(fingerprint.source_files(roots)) not in (base, edited)


def test_moving_bytes_between_files_changes_the_fingerprint(tmp_path):
    a = _tree(tmp_path / "one", {"pkg/a.py": "ab", "pkg/b.py": ""})
    b = _tree(tmp_path / "two", {"pkg/a.py": "a", "pkg/b.py": "b"})
    assert fingerprint.fingerprint_of(fingerprint.source_files(a)) != \
        fingerprint.fingerprint_of(fingerprint.source_files(b))


def test_installed_fingerprint_covers_the_stages_and_schemas():
    names = [n for n, _ in fingerprint.source_files()]
    assert "pipeline/dynamics.py" in names and "pipeline/simulate/engine.py" in names
    assert any(n.startswith("schemas/torque/") for n in names)
    assert not any(n.startswith(("flows/", "tests/")) for n in names)
    assert len(fingerprint.code_fingerprint()) == 64


@pytest.mark.parametrize("key", ["processing", "dynamics"])
def test_a_code_change_is_a_new_cache_key(monkeypatch, key):
    from pipeline.process import BuildConfig
    from pipeline.quality.flags import Thresholds
    from pipeline.simulate.engine import SimConfig

    def compute():
        if key == "processing":
            return dataset_config.processing_key(BuildConfig(), Thresholds())
        return engine.dynamics_config_key(SimConfig())

    before = compute()
    assert compute() == before
    monkeypatch.setattr(fingerprint, "code_fingerprint", lambda: "0" * 64)
    assert compute() != before
