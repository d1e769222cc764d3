"""README.md is rendered from nbs/index.ipynb (Quarto, which nbdev_readme needs, is not required here).

`python tests/readme.py` writes README.md; tests/test_readme.py checks that it is up to date."""
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parents[1]

def _directives(src):
    return [l.strip() for l in src.splitlines() if l.strip().startswith('#|')]

def render_readme(nb_path=ROOT / 'nbs' / 'index.ipynb') -> str:
    "Markdown cells as they are; code cells without `#| hide` as Python blocks, without their directives."
    nb = nbformat.read(nb_path, as_version=4)
    parts = ['<!-- generated from nbs/index.ipynb by tests/readme.py: edit the notebook, not this file -->']
    for c in nb.cells:
        if c.cell_type == 'markdown': parts.append(c.source.strip())
        elif c.cell_type == 'code':
            d = _directives(c.source)
            if any(x.startswith('#| hide') or x.startswith('#| default_exp') for x in d): continue
            code = '\n'.join(l for l in c.source.splitlines() if not l.strip().startswith('#|')).strip()
            if code: parts.append(f"```python\n{code}\n```")
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    (ROOT / 'README.md').write_text(render_readme())
    print('wrote README.md')
