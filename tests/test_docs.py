"The docs build up to Quarto: nbdev's notebook processing, then every processed page converts to HTML."
import shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def proc(tmp_path_factory):
    d = tmp_path_factory.mktemp('docs')
    for p in ['nbs', 'cxr_noisy_lt']: shutil.copytree(ROOT / p, d / p, ignore=shutil.ignore_patterns('_proc', '__pycache__'))
    for p in ['settings.ini', 'setup.py']: shutil.copy(ROOT / p, d / p)
    code = ("from nbdev.serve import proc_nbs; from nbdev.quarto import nbdev_sidebar; "
            "nbdev_sidebar.__wrapped__(path='nbs'); proc_nbs('nbs', n_workers=1)")
    r = subprocess.run([sys.executable, '-c', code], cwd=d, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return d

def test_every_notebook_is_processed(proc):
    nbs = sorted(p.relative_to(ROOT / 'nbs') for p in (ROOT / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in str(p))
    done = sorted(p.relative_to(proc / '_proc') for p in (proc / '_proc').rglob('*.ipynb'))
    assert nbs and done == nbs

def test_pages_convert_to_html(proc):
    from nbconvert import HTMLExporter
    import nbformat
    ex = HTMLExporter()
    for p in sorted((proc / '_proc').rglob('*.ipynb')):
        html, _ = ex.from_notebook_node(nbformat.read(p, as_version=4))
        assert '<html' in html and 'Traceback (most recent call last)' not in html, p
    assert (proc / 'nbs' / 'sidebar.yml').exists()
