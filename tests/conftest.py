"Fixtures shared by the test files: each file that uses `copy` defines its own `base` (the pristine example folders)."
import shutil
import pytest

@pytest.fixture
def copy(base, tmp_path):
    "A fresh copy of an example folder that a test may break."
    def _copy(name):
        shutil.copytree(base / name, tmp_path / name)
        return tmp_path / name
    return _copy
