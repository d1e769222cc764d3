"""The package's architecture, read from its source: no module imports one of a higher layer (imports inside functions
included), no import loop, no module over 600 lines. A new module takes its place in `LAYERS`, so where it stands is a
decision, not an accident."""
import ast
from pathlib import Path
import fastcore.test as fct

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'cxr_noisy_lt'
MAX_LINES = 600

# Rooms from the bottom up. A module may import modules of its own layer or below, never above. An entry ending in
# '.' is a subpackage: all its modules stand in that layer.
LAYERS = [
    ['methods', 'stats', 'labels', 'boxes', 'files'],
    ['phantom_draw', 'phantom', 'noise', 'metrics'],
    ['data'],
    ['losses', 'models', 'cpu_memory', 'state'],
    ['distributed', 'train_modules'],
    ['resume'],
    ['learner'],
    ['datasets.'],
    ['nvum', 'ral', 'mixup', 'annotations'],
    ['coarse2fine', 'twostage'],
    ['report', 'gradcam', 'recipes'],
    ['run', 'runfolder'],
    ['widgets.'],
    ['inspector'],
    ['bench'],
]

def modules() -> dict:
    "Dotted module name below the package -> its file, for every source file but the generated index."
    return {'.'.join(p.relative_to(PKG).with_suffix('').parts): p for p in sorted(PKG.rglob('*.py'))
            if p.name != '_modidx.py' and '__pycache__' not in p.parts}

def _name(mod:str) -> str: return mod[:-len('.__init__')] if mod.endswith('.__init__') else mod

def imports(name:str, path:Path, known) -> set:
    "The package's modules that module `name` imports anywhere in its file."
    here = name.split('.') if path.name == '__init__.py' else name.split('.')[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.ImportFrom):
            if node.level: base = here[:len(here) - node.level + 1] + (node.module.split('.') if node.module else [])
            elif node.module and node.module.split('.')[0] == 'cxr_noisy_lt': base = node.module.split('.')[1:]
            else: continue
            cands = ['.'.join(base)] + ['.'.join(base + [a.name]) for a in node.names]
        elif isinstance(node, ast.Import):
            cands = ['.'.join(a.name.split('.')[1:]) for a in node.names if a.name.split('.')[0] == 'cxr_noisy_lt']
        else: continue
        found |= {c for c in cands if c in known}
    found.discard(name); found.discard('')
    return found

def graph() -> dict:
    mods = modules()
    known = {_name(m) for m in mods} - {'__init__'}
    return {_name(m): imports(_name(m), p, known) for m, p in mods.items() if m != '__init__'}

def layer(name:str):
    for i, names in enumerate(LAYERS):
        if any(name == n or (n.endswith('.') and name.startswith(n)) or name + '.' == n for n in names): return i

def test_every_module_has_a_layer():
    missing = [m for m in graph() if layer(m) is None]
    assert not missing, f"modules without a place in LAYERS (tests/test_architecture.py): {missing}"

def test_no_module_imports_a_higher_layer():
    bad = [f"{m} (layer {layer(m)}) imports {o} (layer {layer(o)})" for m, deps in graph().items() for o in sorted(deps)
           if layer(m) is not None and layer(o) is not None and layer(o) > layer(m)]
    assert not bad, "upward imports:\n" + '\n'.join(bad)

def find_cycle(g:dict):
    "One import loop of graph `g` as a list of modules, or None."
    state, stack = {}, []
    def visit(n):
        state[n] = 1; stack.append(n)
        for o in sorted(g.get(n, ())):
            if state.get(o) == 1: return stack[stack.index(o):] + [o]
            if o not in state and (c := visit(o)): return c
        state[n] = 2; stack.pop()
    for n in sorted(g):
        if n not in state and (c := visit(n)): return c

def test_no_import_loop():
    c = find_cycle(graph())
    assert c is None, "import loop: " + ' -> '.join(c)

def test_cycle_finder_finds_loops():
    fct.test_eq(find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}), ['a', 'b', 'c', 'a'])
    fct.test_eq(find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}), None)

def test_imports_are_read_from_every_form(tmp_path):
    p = tmp_path / 'x.py'
    p.write_text("from .a import f\nimport cxr_noisy_lt.b\ndef g():\n    from cxr_noisy_lt.sub.c import h\n    from . import d\n")
    fct.test_eq(imports('x', p, {'a', 'b', 'sub.c', 'd', 'e'}), {'a', 'b', 'sub.c', 'd'})

def test_no_module_over_600_lines():
    big = {m: n for m, p in modules().items() if (n := len(p.read_text(encoding='utf-8').splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"

DATASETS = ['core', 'cache', 'nih', 'chexpert', 'padchest', 'openi', 'chestmnist', 'protocol']   # bottom to top

def test_datasets_parts_import_downwards():
    "Inside the datasets subpackage: core imports no other part, each part only parts before it, none the package itself."
    g = graph()
    for k, m in enumerate(DATASETS):
        up = sorted(o for o in g[f'datasets.{m}'] if o == 'datasets' or (o.startswith('datasets.') and o.split('.')[1] not in DATASETS[:k]))
        assert not up, f"datasets.{m} imports {up}: only {DATASETS[:k]} are below it"
    fct.test_eq(g['datasets'] >= {f'datasets.{m}' for m in DATASETS}, True)
