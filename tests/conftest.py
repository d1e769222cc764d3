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

# Long tests are marked `slow`: the README's test command skips them, CI runs them too (`pytest -m slow --slow`).
def pytest_addoption(parser):
    parser.addoption('--slow', action='store_true', default=False, help='also run the tests marked slow (long runs)')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: a long run; skipped unless --slow is given (CI gives it)')

def pytest_collection_modifyitems(config, items):
    if config.getoption('--slow'): return
    skip = pytest.mark.skip(reason='a long run: give --slow to run it (CI does)')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)
