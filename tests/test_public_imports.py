"""Every import of the package that the docs show works: each `from cxr_noisy_lt... import a, b` and `import
cxr_noisy_lt...` in README.md and in the notebooks (code cells, and code in markdown cells) is one test, so a module
renamed or split under a page that still shows the old path fails here. Then the public paths the docs promise
(tests/test_architecture.py checks the layering)."""
import ast, configparser, importlib, json, re
from pathlib import Path
import pytest
import fastcore.test as fct

ROOT = Path(__file__).resolve().parents[1]
PKG = 'cxr_noisy_lt'
FENCE = re.compile(r'```[^\n]*\n(.*?)```', re.S)
INLINE = re.compile(r'`((?:from|import) cxr_noisy_lt[^`\n]*)`')
FROM = re.compile(r'^[ \t]*from[ \t]+(cxr_noisy_lt(?:\.\w+)*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*)', re.M)
IMPORT = re.compile(r'^[ \t]*import[ \t]+(cxr_noisy_lt(?:\.\w+)*)', re.M)


def _by_regex(text:str) -> list:
    "The package's import statements in `text` that does not parse as a whole (a snippet, shell lines around it)."
    out = [(m[1], tuple(n.strip().split(' as ')[0].strip() for n in m[2].strip('()').replace('\\\n', ' ').split(',')
                        if n.strip())) for m in FROM.finditer(text)]
    return out + [(m[1], None) for m in IMPORT.finditer(text)]

def _statements(text:str) -> list:
    "(module, names) of every import of the package in `text`; names is None for `import module`."
    text = '\n'.join('' if l.lstrip().startswith(('%', '!')) else l for l in text.splitlines())   # IPython magics
    try: tree = ast.parse(text)
    except SyntaxError: return _by_regex(text)
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or '').split('.')[0] == PKG:
            out.append((n.module, tuple(a.name for a in n.names)))
        elif isinstance(n, ast.Import): out += [(a.name, None) for a in n.names if a.name.split('.')[0] == PKG]
    return out

def _markdown_code(text:str) -> list:
    "The code in markdown `text`: fenced blocks, and inline code that is an import of the package."
    return FENCE.findall(text) + INLINE.findall(text)

def _shown() -> dict:
    "{(module, names): [places]} of every import of the package that README.md and the notebooks show."
    found = {}
    def add(text, place):
        for st in _statements(text): found.setdefault(st, []).append(place)
    readme = (ROOT / 'README.md').read_text()
    for code in _markdown_code(readme): add(code, 'README.md')
    nbs = sorted((ROOT / 'nbs').glob('*.ipynb')) + sorted((ROOT / 'nbs' / 'tutorials').glob('*.ipynb'))
    for p in nbs:
        for k, c in enumerate(json.loads(p.read_text())['cells']):
            src, place = ''.join(c['source']), f"{p.relative_to(ROOT)}, cell {k}"
            if c['cell_type'] == 'code': add(src, place)
            elif c['cell_type'] == 'markdown':
                for code in _markdown_code(src): add(code, place)
    return found

SHOWN = _shown()

def _text(module, names): return f"import {module}" if names is None else f"from {module} import {', '.join(names)}"

def _check(module:str, names):
    "Import `module` and each of `names` from it, as Python's import statement does; the names that fail."
    m = importlib.import_module(module)
    if names is None: return []
    missing = []
    for n in names:
        if n == '*': missing += [a for a in getattr(m, '__all__', []) if not hasattr(m, a)]; continue
        if not n.isidentifier(): continue                        # '...' in a sketch of an import
        if hasattr(m, n): continue
        try: importlib.import_module(f"{module}.{n}")             # `from package import submodule`
        except ModuleNotFoundError: missing.append(n)
    return missing


@pytest.mark.parametrize('module,names', list(SHOWN), ids=[_text(*k) for k in SHOWN])
def test_shown_import(module, names):
    "An import that README.md or a notebook shows works (the places it is shown are in the message)."
    try: missing = _check(module, names)
    except ImportError as e: pytest.fail(f"{_text(module, names)}: {e} (shown in {SHOWN[module, names]})")
    assert not missing, f"{_text(module, names)}: cannot import {missing} (shown in {SHOWN[module, names]})"

def test_scan_finds_imports():
    "The scan sees the README's imports, imports in functions, parenthesised and multi-line imports, and markdown code."
    fct.test_eq(('cxr_noisy_lt.phantom', ('make_phantom',)) in SHOWN, True)
    assert any('README.md' in p for p in SHOWN['cxr_noisy_lt.phantom', ('make_phantom',)])
    fct.test_eq(len(SHOWN) > 50, True)
    code = ("import os\nfrom cxr_noisy_lt.data import (cxr_dls,\n    test_dl as tdl)\n%matplotlib inline\n"
            "def f():\n    import cxr_noisy_lt.labels as L\n    from cxr_noisy_lt.nvum import NVUMCallback\n")
    fct.test_eq(sorted(_statements(code), key=str), sorted([('cxr_noisy_lt.data', ('cxr_dls', 'test_dl')),
                ('cxr_noisy_lt.labels', None), ('cxr_noisy_lt.nvum', ('NVUMCallback',))], key=str))
    md = "Run\n```bash\npip install x\n```\nthen `from cxr_noisy_lt.boxes import check_boxes, draw_box`:\n"
    fct.test_eq(_statements(_markdown_code(md)[-1]), [('cxr_noisy_lt.boxes', ('check_boxes', 'draw_box'))])
    fct.test_eq(_statements("from cxr_noisy_lt.files import (atomic_write,\n    default_cache_dir)\nsrc = load(...,"),
                [('cxr_noisy_lt.files', ('atomic_write', 'default_cache_dir'))])
    fct.test_eq(_check('cxr_noisy_lt.boxes', ('check_boxes', 'no_such_name')), ['no_such_name'])
    fct.test_eq(_check('cxr_noisy_lt.datasets', ('nih', 'core')), [])          # submodules of a package


# The public paths the docs promise (README, DESIGN, the pages' prose), whether or not a cell shows them.
PHANTOM_NAMES = ('NIH_COLUMNS', 'PHANTOM_VERSION', 'GAZE_SIZE', 'NBANK', 'F32', 'FOOTPRINTS', 'GENERATORS',
    'nih_metadata_path', 'nih_metadata', 'sample_nih', 'phantom_split', 'texture_bank', 'scene_params', 'lung_geom',
    'lung_point', 'lung_mask', 'fp_gauss', 'fp_disc', 'fp_effusion', 'fp_ptx', 'fp_pleural_line', 'fp_lobe',
    'fp_pleural', 'fp_kerley', 'fp_hernia', 'gen_atelectasis', 'gen_effusion', 'gen_infiltration', 'gen_mass',
    'gen_nodule', 'gen_pneumonia', 'gen_pneumothorax', 'gen_consolidation', 'gen_edema', 'gen_emphysema',
    'gen_fibrosis', 'gen_pleural_thickening', 'gen_hernia', 'gen_cardiomegaly', 'gen_lookalikes', 'build_scene',
    'render', 'simulate_gaze', 'PhantomCacheError', 'default_cache_dir', 'code_fingerprint', 'check_cache', 'Phantom',
    'phantom_frame', 'make_phantom', 'compare_with_nih')          # every name the phantom had before its drawing moved
KEY = [
    ('cxr_noisy_lt.nvum', ('NVUMCallback',)),
    ('cxr_noisy_lt.ral', ('RobustAsymmetricLoss', 'AsymmetricLoss', 'FocalLossMultiLabel')),
    ('cxr_noisy_lt.learner', ('cxr_learner', 'predict_split')),
    ('cxr_noisy_lt.data', ('cxr_dls',)),
    ('cxr_noisy_lt.noise', ('add_noise',)),
    ('cxr_noisy_lt.metrics', ('per_class_auc', 'macro')),
    ('cxr_noisy_lt.datasets', ('load_nih', 'load_dataset', 'LOADERS', 'EXAMPLES', 'register_dataset', 'make_example',
                               'CXRSource', 'build_cache', 'read_xray', 'nvum_protocol', 'harmonise')),
    ('cxr_noisy_lt.datasets.core', ('CXRSource', 'load_dataset', 'register_dataset', 'make_example', 'read_xray')),
    ('cxr_noisy_lt.datasets.cache', ('build_cache', 'load_cache', 'cache_frame')),
    ('cxr_noisy_lt.datasets.nih', ('load_nih', 'nih_boxes', 'NIH_BBOX')),
    ('cxr_noisy_lt.datasets.chexpert', ('load_chexpert', 'load_mimic')),
    ('cxr_noisy_lt.datasets.padchest', ('load_padchest', 'PADCHEST')),
    ('cxr_noisy_lt.datasets.openi', ('load_openi', 'OPENI')),
    ('cxr_noisy_lt.datasets.chestmnist', ('load_chestmnist',)),
    ('cxr_noisy_lt.datasets.protocol', ('nvum_protocol', 'nvum_test_sets', 'harmonise')),
    ('cxr_noisy_lt.phantom', PHANTOM_NAMES),
    ('cxr_noisy_lt.phantom_draw', ('build_scene', 'render', 'simulate_gaze', 'PHANTOM_VERSION')),
    ('cxr_noisy_lt.boxes', ('BOX_COLS', 'check_boxes', 'draw_box', 'draw_boxes', 'name_boxes')),
    ('cxr_noisy_lt.files', ('default_cache_dir', 'atomic_write')),
]

@pytest.mark.parametrize('module,names', KEY, ids=[m for m, _ in KEY])
def test_key_import(module, names):
    fct.test_eq(_check(module, names), [])

def test_console_scripts():
    "Each command of settings.ini's console_scripts (`cxr_bench=cxr_noisy_lt.bench:main`) names a function that exists."
    cp = configparser.ConfigParser(); cp.read(ROOT / 'settings.ini')
    for entry in cp['DEFAULT']['console_scripts'].split():
        name, target = entry.split('=')
        module, fn = target.split(':')
        assert callable(getattr(importlib.import_module(module), fn, None)), entry

def test_default_cache_dir_is_one_function():
    from cxr_noisy_lt import files, phantom
    from cxr_noisy_lt.datasets import cache
    assert phantom.default_cache_dir is files.default_cache_dir is cache.default_cache_dir

