"README.md is the rendering of nbs/index.ipynb, and gives exactly the two set-up commands CI runs."
import re, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from readme import render_readme, ROOT

def test_readme_is_rendered_from_index():
    assert (ROOT / 'README.md').read_text() == render_readme(), "run `python tests/readme.py` and commit README.md"

def test_two_setup_commands():
    txt = (ROOT / 'README.md').read_text()
    install = re.findall(r'^pip install .*$', txt, flags=re.M)
    tests = re.findall(r'^nbdev_test.*$', txt, flags=re.M)
    assert len(install) == 1 and 'cxr_bench --quick' in install[0], install
    assert len(tests) == 1 and tests[0].rstrip().endswith('pytest tests'), tests
