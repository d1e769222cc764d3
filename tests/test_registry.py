"""Methods from outside the package in `cxr_bench`: a recipe named `module:function` and one an installed package declares
as an entry point run in two worker processes beside BCE, their results carry their own names, a cell that raises is
reported while the others finish, and a name that cannot be imported stops the command before any cell runs."""
import json, os, re, subprocess, textwrap
import pandas as pd
import pytest
import fastcore.test as fct

TINY = ['--noise', 'none', '--seeds', '0', '--n', '300', '--size', '32', '--epochs', '2', '--bs', '32',
        '--splits', '0.5,0.2,0.3', '--threads', '1']

PLUGIN = '''
import torch
from cxr_noisy_lt.methods import Method
from cxr_noisy_lt.learner import cxr_learner, label_mask, masked_reduce

class GCELoss(torch.nn.Module):
    "Generalised cross-entropy per label, (1 - p_y^q) / q, averaged over the known labels."
    def __init__(self, q=0.7): super().__init__(); self.q = q
    def forward(self, logits, target, *extra):
        mask, t = label_mask(target)
        p = torch.sigmoid(logits.float())
        p_y = torch.where(t > 0.5, p, 1 - p).clamp_min(1e-6)
        return masked_reduce((1 - p_y ** self.q) / self.q, mask, 'mean')

def gce(q=0.7):
    return Method('gce', lambda dls, arch='narrow_resnet10', **kw: cxr_learner(dls, arch=arch, loss_func=GCELoss(q), **kw),
                  description=f'generalised cross-entropy, q={q}')

def broken():
    def make(dls, **kw): raise RuntimeError('this method cannot build a learner')
    return Method('broken', make)
'''

def run(args, cwd, pythonpath=None):
    env = dict(os.environ, CXR_NOISY_LT_CACHE=str(cwd / 'cache'), MPLBACKEND='Agg', OMP_NUM_THREADS='1')
    if pythonpath: env['PYTHONPATH'] = os.pathsep.join([str(pythonpath)] + [p for p in [env.get('PYTHONPATH')] if p])
    return subprocess.run(['cxr_bench', *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)

CELL = re.compile(r'^\d\d:\d\d:\d\d \[(\d+)/(\d+)\] (.+?) (done in \d+ s.*|failed: .*)$', re.M)

@pytest.mark.slow
def test_module_function_in_workers_a_failing_cell_and_resume(tmp_path):
    "`my_plugin:gce` (a module in the current folder) in 2 workers; `my_plugin:broken` fails, is reported, and the rest finishes."
    (tmp_path / 'my_plugin.py').write_text(PLUGIN)
    out = tmp_path / 'res'
    args = ['--methods', 'bce,my_plugin:gce,my_plugin:broken', *TINY, '--workers', '2', '--out', str(out)]
    r = run(args, tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "1 of 3 runs failed (my_plugin:broken | none | 0)" in r.stderr, r.stderr[-3000:]
    fct.test_eq(set(pd.read_csv(out / 'results.csv')['method']), {'bce', 'gce'})       # the Method's name, not the import path
    fct.test_eq(set(pd.read_csv(out / 'curves.csv')['method']), {'bce', 'gce'})
    assert (out / 'runs' / 'gce__none__seed0.boot.npz').exists()
    assert 'RuntimeError: this method cannot build a learner' in (out / 'runs' / 'failed' / 'broken__none__seed0.txt').read_text()
    summary = (out / 'summary.md').read_text()
    assert '## Runs that failed' in summary and '- my_plugin:broken | none | 0: RuntimeError: this method cannot build a learner' in summary
    run_json = json.loads((out / 'run.json').read_text())
    fct.test_eq((run_json['failed'], run_json['names']['my_plugin:gce']), (['broken__none__seed0'], 'gce'))
    assert '| gce | none | 1 |' in r.stdout                  # the tables are printed before the command fails
    # not a terminal: one line per finished cell, no progress-bar frames
    cells = CELL.findall(r.stdout)
    fct.test_eq(sorted(c[2] for c in cells), ['bce | none | 0', 'my_plugin:broken | none | 0', 'my_plugin:gce | none | 0'])
    fct.test_eq(sorted(int(c[0]) for c in cells), [1, 2, 3])
    assert '\r' not in r.stdout and '█' not in r.stdout, r.stdout[:2000]
    assert '3 of 3 runs to do in 2 worker processes' in r.stdout
    # --resume reads back the two saved cells and runs the failed one again
    r2 = run([*args, '--resume'], tmp_path)
    assert r2.returncode == 1, r2.stderr[-3000:]
    assert '1 of 3 runs to do (2 saved) in this process' in r2.stdout, r2.stdout
    fct.test_eq([c[2] for c in CELL.findall(r2.stdout)], ['my_plugin:broken | none | 0'])
    fct.test_eq(set(pd.read_csv(out / 'results.csv')['method']), {'bce', 'gce'})

def _fake_distribution(folder):
    "A plug-in as pip installs it: the module and a *.dist-info folder whose entry_points.txt declares the recipe."
    folder.mkdir()
    (folder / 'cxr_gce_plugin.py').write_text(PLUGIN)
    info = folder / 'cxr_gce_plugin-0.1.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: cxr-gce-plugin\nVersion: 0.1\n')
    (info / 'entry_points.txt').write_text('[cxr_noisy_lt.methods]\ngce = cxr_gce_plugin:gce\n')
    return folder

@pytest.mark.slow
def test_entry_point_in_workers(tmp_path):
    "An installed package's entry point `gce` is listed with its distribution and runs in 2 workers; --verbose logs each epoch."
    site = _fake_distribution(tmp_path / 'site')
    r = run(['--list_methods'], tmp_path, pythonpath=site)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(l for l in r.stdout.splitlines() if l.startswith('gce '))
    assert 'entry point of cxr-gce-plugin 0.1 (cxr_gce_plugin:gce)' in line and 'generalised cross-entropy, q=0.7' in line, line
    assert re.search(r'^bce +package \(cxr_noisy_lt\.recipes\)', r.stdout, re.M), r.stdout
    out = tmp_path / 'res'
    r = run(['--methods', 'bce,gce@q=0.5', *TINY, '--workers', '2', '--verbose', '--out', str(out)], tmp_path, pythonpath=site)
    assert r.returncode == 0, r.stderr[-3000:]
    fct.test_eq(set(pd.read_csv(out / 'results.csv')['method']), {'bce', 'gce@q=0.5'})
    assert (out / 'runs' / 'gce@q=0.5__none__seed0.csv').exists()
    claims = pd.read_csv(out / 'claims.csv')
    assert set(claims['claim']) == {'gce@q=0.5 > bce'} and set(claims['verdict']) == {'inconclusive'}   # one seed
    epochs = re.findall(r'^\d\d:\d\d:\d\d (.+?) \| none \| 0: epoch (\d) \(main\): train loss [\d.]+, valid mAUC', r.stdout, re.M)
    fct.test_eq(sorted(epochs), [('bce', '1'), ('bce', '2'), ('gce@q=0.5', '1'), ('gce@q=0.5', '2')])
    fct.test_eq(len(CELL.findall(r.stdout)), 2)

@pytest.mark.parametrize('name,msg', [('nowhere:gce', "method 'nowhere:gce': cannot import module 'nowhere': ModuleNotFoundError"),
                                      ('bad_plugin:gce', "method 'bad_plugin:gce': cannot import module 'bad_plugin': RuntimeError: no torch here"),
                                      ('my_plugin:nothing', "method 'my_plugin:nothing': module 'my_plugin'"),
                                      ('my_plugin:GCELoss', "returned GCELoss, not a Method")])
def test_bad_outside_name_fails_before_any_cell(tmp_path, name, msg):
    (tmp_path / 'my_plugin.py').write_text(PLUGIN)
    (tmp_path / 'bad_plugin.py').write_text('raise RuntimeError("no torch here")\n')
    r = run(['--methods', f'bce,{name}', *TINY, '--out', str(tmp_path / 'x')], tmp_path)
    assert r.returncode != 0 and msg in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / 'x').exists()                     # nothing ran, nothing was written
