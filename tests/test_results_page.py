"The results page shows the kept benchmark run: its saved outputs are those a fresh execution gives."
import json, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from pathlib import Path
import pandas as pd
from results_page import PAGE, DATA, execute_page, text_outputs
from execnb.nbio import read_nb

def test_kept_run_is_consistent():
    res = pd.read_csv(DATA / 'results.csv')
    run = json.loads((DATA / 'run.json').read_text())
    base = res['method'].str.split('/').str[0]                   # 'coarse2fine/stage1' is a stage of the coarse2fine run
    assert set(base) == set(run['methods']) and 'bce' in set(base)
    assert set(res['noise']) == set(run['noise']) and set(res['labels']) == {'clean', 'noisy'}
    assert set(res['select']) == {'best', 'last'}
    runs = res.assign(method=base).groupby(['method', 'noise', 'seed']).ngroups
    assert runs == len(run['seconds']), (runs, len(run['seconds']))
    n_grid = len(run['methods']) * len(run['noise']) * len(run['config']['seeds'])
    assert runs + len(run.get('missing', [])) + len(run.get('failed', [])) == n_grid     # every cell accounted for
    curves = pd.read_csv(DATA / 'curves.csv')
    assert curves.groupby(['method', 'noise', 'seed']).ngroups == runs                # one curve per finished run
    epochs = curves.groupby(['method', 'noise', 'seed'])['epoch'].max()
    assert (epochs >= run['config']['epochs']).all(), epochs[epochs < run['config']['epochs']]
    ci = pd.read_csv(DATA / 'deltas_ci.csv')
    for f in ('mAUC', 'tail_AUC'):
        assert (ci[f'd_{f}_lo'] <= ci[f'd_{f}'] + 1e-9).all() and (ci[f'd_{f}'] <= ci[f'd_{f}_hi'] + 1e-9).all()
    assert {('nvum', 'bce'), ('coarse2fine', 'coarse2fine/stage1')} <= set(zip(ci['method'], ci['baseline']))

def test_saved_outputs_match_the_kept_run():
    saved, fresh = read_nb(PAGE), execute_page()
    assert text_outputs(saved) == text_outputs(fresh), "nbs/40_results.ipynb is stale: run python tests/results_page.py"
    n_png = sum('image/png' in o.get('data', {}) for c in saved.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert n_png >= 2, 'the page should show its plots'
    assert PAGE.stat().st_size < 400_000, f"{PAGE.name} is {PAGE.stat().st_size} bytes: keep the plots small"
