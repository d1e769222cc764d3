"Fixtures shared by the test files: `copy` (each file that uses it defines its own `base`, the pristine example folders) and `snapshot`."
import shutil
from pathlib import Path
import pytest

@pytest.fixture
def copy(base, tmp_path):
    "A fresh copy of an example folder that a test may break."
    def _copy(name):
        shutil.copytree(base / name, tmp_path / name)
        return tmp_path / name
    return _copy

@pytest.fixture
def snapshot():
    "A function: every file under a folder with its modification time and bytes, to check that a refused call left it as it was."
    return lambda root: {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(Path(root).rglob('*')) if p.is_file()}
