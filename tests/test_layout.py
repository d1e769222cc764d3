"The repository's top level holds exactly the project's files, and _quarto.yml is a link to nbs/_quarto.yml."
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {'nbs', 'cxr_noisy_lt', 'settings.ini', 'setup.py', 'README.md', 'tests', '_quarto.yml',
           '.ci', '.github', '.gitignore', 'LICENSE'}

def test_top_level_is_exactly_the_project():
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    top = {f.split('/')[0] for f in files}
    assert top <= ALLOWED, f"unexpected top-level entries: {sorted(top - ALLOWED)}"
    assert {'nbs', 'cxr_noisy_lt', 'settings.ini', 'setup.py', 'README.md', 'tests', '_quarto.yml'} <= top

def test_quarto_config_is_a_link():
    q = ROOT / '_quarto.yml'
    assert q.is_symlink() and q.resolve() == (ROOT / 'nbs' / '_quarto.yml').resolve()

def test_every_notebook_names_its_kernel():
    "Each notebook names the python3 kernel, so JupyterLab opens it without asking which kernel to start."
    import json
    nbs = sorted((ROOT / 'nbs').rglob('*.ipynb'))
    assert nbs
    bad = [str(p.relative_to(ROOT)) for p in nbs if '.ipynb_checkpoints' not in p.parts and
           {k: v for k, v in json.loads(p.read_text(encoding='utf-8')).get('metadata', {}).get('kernelspec', {}).items()
            if k in ('name', 'language')} != {'name': 'python3', 'language': 'python'}]
    assert not bad, f"notebooks without the kernelspec {{'name': 'python3', 'language': 'python'}}: {bad}"
