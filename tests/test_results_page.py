"The results pages show the kept benchmark runs: the kept files agree with each other, and the saved outputs are those a fresh execution gives."
import json, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from results_page import PAGES, DATA, execute_page, text_outputs
from execnb.nbio import read_nb
from cxr_noisy_lt.report import CLAIM_COLS, run_means
from cxr_noisy_lt.stats import verdict, holm

def grid_cells(run):
    "Every (method, noise, seed) of the kept profile: the main grid and its sub-grids."
    cells = {(m, nz, s) for m in run['methods'] for nz in run['noise'] for s in run['config']['seeds']}
    for ms, ns, ss in run.get('extra', []): cells |= {(m, nz, s) for m in ms for nz in ns for s in ss}
    return cells

def test_kept_run_is_consistent():
    res = pd.read_csv(DATA / 'results.csv')
    run = json.loads((DATA / 'run.json').read_text())
    cells = grid_cells(run)
    base = res['method'].str.split('/').str[0]                   # 'coarse2fine/stage1' is a stage of the coarse2fine run
    done = set(zip(base, res['noise'], res['seed']))
    assert done <= cells and 'bce' in set(base)
    assert set(res['labels']) == {'clean', 'noisy'} and set(res['select']) == {'best', 'last', 'clean_best'}
    assert len(done) == len(run['seconds']), (len(done), len(run['seconds']))
    assert len(done) + len(run.get('missing', [])) + len(run.get('failed', [])) == len(cells)     # every cell accounted for
    curves = pd.read_csv(DATA / 'curves.csv')
    assert curves.groupby(['method', 'noise', 'seed']).ngroups == len(done)                       # one curve per finished run
    epochs = curves.groupby(['method', 'noise', 'seed'])['epoch'].max()
    assert (epochs >= run['config']['epochs']).all(), epochs[epochs < run['config']['epochs']]
    kept = {p.name.removesuffix('.csv') for p in (DATA / 'runs').glob('*.csv') if not p.name.endswith('.curves.csv')}
    assert len(kept) == len(done), 'runs/ holds every finished run, so that the grid resumes from them'
    for stem in kept:
        assert (DATA / 'runs' / f'{stem}.curves.csv').exists() and (DATA / 'runs' / f'{stem}.boot.npz').exists(), stem

def test_claims_agree_with_results():
    "claims.csv: its columns, the per-seed differences of results.csv, Holm within each table, the verdict rules."
    res, claims = pd.read_csv(DATA / 'results.csv'), pd.read_csv(DATA / 'claims.csv')
    assert list(claims.columns) == CLAIM_COLS
    means = {sel: run_means(res, sel).query("labels == 'clean'").set_index(['method', 'noise', 'seed']) for sel in set(claims['select'])}
    for c in claims.itertuples():
        rm = means[c.select][c.figure]
        a, b = rm.xs((c.method, c.noise), level=(0, 1)), rm.xs((c.reference, c.noise), level=(0, 1))
        d = (a - b).dropna()
        assert len(d) == c.seeds and int((d > 0).sum()) == c.wins and abs(d.mean() - c.delta) < 1e-9, c
        assert c.lo <= c.delta + 1e-9 and c.delta <= c.hi + 1e-9, c
    for _, g in claims.groupby(['reference', 'figure', 'noise', 'select']):
        np.testing.assert_allclose(g['p_holm'], holm(g['p']), atol=1e-12)
    assert (claims['verdict'] == [verdict(lo, hi, p) for lo, hi, p in zip(claims['lo'], claims['hi'], claims['p_holm'])]).all()
    assert not ((claims['seeds'] < 6) & (claims['verdict'] != 'inconclusive')).any()
    run = json.loads((DATA / 'run.json').read_text())
    main = claims[(claims['reference'] == 'bce') & (claims['figure'] == 'mAUC') & (claims['select'] == 'best')]
    for m in run['methods'][1:]:
        for nz in run['noise']:
            if ((res['method'] == m) & (res['noise'] == nz)).any(): assert ((main['method'] == m) & (main['noise'] == nz)).any(), (m, nz)

@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_saved_outputs_match_the_kept_run(page):
    saved, fresh = read_nb(page), execute_page(page)
    assert text_outputs(saved) == text_outputs(fresh), f"nbs/{page.name} is stale: run python tests/results_page.py"
    n_png = sum('image/png' in o.get('data', {}) for c in saved.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert n_png >= 2, 'the page should show its plots'
    assert page.stat().st_size < 400_000, f"{page.name} is {page.stat().st_size} bytes: keep the plots small"
