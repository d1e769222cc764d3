"""The explorers of `cxr_noisy_lt.widgets` without a browser: a `cxr_bench` folder whose runs keep their test probabilities,
read back exactly; controls that redraw what they should; static figures that render readably; bad input named."""
import contextlib, io, json, re, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import fastcore.test as fct
warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
import torch
import cxr_noisy_lt.widgets as W
from cxr_noisy_lt.bench import BenchRunner, noisy_frame
from cxr_noisy_lt.labels import NIH14
from cxr_noisy_lt.metrics import per_class_auc, bootstrap_ci

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / 'nbs' / 'results' / 'full_grid'            # example runs kept in the repository: read only
REGIME = dict(n=500, size=64, epochs=2, bs=32, splits=(0.5, 0.2, 0.3))
NOISE = 'nih-like:0.4'

@pytest.fixture(scope='module')
def bench_dir(tmp_path_factory):
    "A tiny grid (BCE and RAL under NIH-like noise, two seeds) run by cxr_bench's runner into a folder, with probabilities."
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('bench')
    r = BenchRunner(('bce', 'ral'), ('none', NOISE), (0, 1), out=d / 'out', cache_dir=d / 'cache', save_probs=True, **REGIME)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()): r.run()
    return d

@pytest.fixture(scope='module')
def phantom(bench_dir):
    from cxr_noisy_lt.phantom import make_phantom
    return make_phantom(REGIME['n'], REGIME['size'], seed=0, splits=REGIME['splits'], cache_dir=bench_dir / 'cache', progress=False)

@pytest.fixture(autouse=True)
def no_figures_left():
    yield
    plt.close('all')

def readable(fig, methods=()):
    "Check a figure as a reader sees it: fonts of 9 pt or more, AUROC never written AUC, legends off the data; returns its texts."
    fig.canvas.draw()
    rend = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 9]
    assert not small, f"text under 9 pt: {small[:5]}"
    words = [t.get_text() for t in texts]
    assert not [w for w in words if 'AUC' in w], [w for w in words if 'AUC' in w]
    data_axes = [a for a in fig.axes if a.get_label() != '<colorbar>']
    legends = [a.get_legend() for a in fig.axes if a.get_legend() is not None] + list(fig.legends)
    for leg in legends:
        bb = leg.get_window_extent(rend)
        hit = [a for a in data_axes if bb.overlaps(a.get_window_extent(rend))]
        assert not hit, f"legend {[t.get_text() for t in leg.get_texts()]} lies over an axes"
    buf = io.BytesIO(); fig.savefig(buf, format='png', dpi=60)
    assert buf.tell() > 5000
    return words

def colours_of(ax):
    return [matplotlib.colors.to_hex(c.patches[0].get_facecolor()) for c in ax.containers
            if isinstance(c, matplotlib.container.BarContainer)]

def png(w, key):
    return [o['data']['image/png'] for o in w.outs[key].outputs if 'image/png' in o['data']]

def html(w, key):
    return ''.join(o['data'].get('text/html', '') for o in w.outs[key].outputs)

# --- reading a cxr_bench folder ----------------------------------------------------------------------------------

def test_folder_is_read_back_exactly(bench_dir, phantom):
    b = W.load_bench(bench_dir / 'out')
    assert b.methods == ['bce', 'ral'] and b.noises == ['none', NOISE] and b.classes == list(NIH14)
    keys = {(m, n, s, sel) for m in ('bce', 'ral') for n in ('none', NOISE) for s in (0, 1) for sel in ('best', 'last', 'clean_best')}
    assert set(b.probs) == keys and set(b.boot) == keys and set(b.boot_ap) == keys
    assert b.config['n'] == REGIME['n'] and b.curves is not None and b.deltas_ci is not None
    for s in (0, 1):
        test = noisy_frame(phantom, NOISE, s)
        test = test[test['split'] == 'test'].reset_index(drop=True)
        drawn = b.test_frame(NOISE, s)                          # drawn from the regime, no image rendered
        cols = ['image', 'patient'] + list(NIH14) + [f'clean_{c}' for c in NIH14]
        pd.testing.assert_frame_equal(drawn[cols], test[cols], check_dtype=False)
        for sel in ('best', 'last'):
            k = ('ral', NOISE, s, sel)
            y = b.labels(NOISE, s, 'clean')
            auc = b.rows(NOISE, 'clean', sel).query('method == "ral" and seed == @s')['auc'].to_numpy()
            np.testing.assert_allclose(per_class_auc(y, b.probs[k]), auc, atol=1e-6)     # the scored probabilities
            again = bootstrap_ci(y, b.probs[k], drawn['patient'].to_numpy(), 'auc', seed=0, return_samples=True)[1]
            np.testing.assert_allclose(again, b.boot[k], atol=1e-5)                     # the same resamples

def test_paired_interval_is_the_benchmarks(bench_dir):
    b = W.load_bench(bench_dir / 'out')
    for noise in ('none', NOISE):
        d = W.class_deltas(b, 'ral', 'bce', noise)
        claims = pd.read_csv(bench_dir / 'out' / 'claims.csv')                          # the benchmark's own seed-level claim
        ci = claims.set_index(['method', 'reference', 'figure', 'noise', 'select']).loc[('ral', 'bce', 'mAUC', noise, 'best')]
        np.testing.assert_allclose(d[['delta', 'lo', 'hi', 'p']].iloc[-1].to_numpy(float), ci[['delta', 'lo', 'hi', 'p']].to_numpy(float), atol=1e-9)
        assert d['verdict'].iat[-1] == ci['verdict'] == 'inconclusive'                   # two seeds decide nothing
        assert d['seeds'].iat[-1] == 2 and d['class'].iat[-1] == W.MEAN_ROW
        r = b.rows(noise).pivot_table(index='class', columns='method', values='auc')          # mean over both seeds
        per = d.iloc[:-1].set_index('class')
        np.testing.assert_allclose(per['delta'], (r['ral'] - r['bce']).loc[per.index], atol=1e-9)
        assert ((per['lo'] <= per['delta'] + 1e-9) | per['lo'].isna()).all()

def test_a_runs_folder_and_a_partial_grid():
    full = W.load_bench(GRID)
    runs = W.load_bench(GRID / 'runs')
    assert full.results.shape == runs.results.shape and set(full.boot) == set(runs.boot)
    assert full.methods[0] == 'bce' and full.probs == {}
    assert sorted(full.seeds('bce', 'none')) == [0, 1, 2]
    with pytest.raises(W.NotAvailable, match='save_probs'): W.roc_view(full, 'Hernia')

# --- the results explorer ----------------------------------------------------------------------------------------

def test_results_explorer_controls_redraw(bench_dir):
    w = W.results_explorer(bench_dir / 'out')
    c = w.controls
    p0 = png(w, 'classes')
    c['metric'].value = 'ap'
    assert png(w, 'classes') != p0 and '<th>mean AP</th>' in html(w, 'classes')
    c['select'].value = 'last'
    p1 = png(w, 'classes')
    c['noise'].value = NOISE
    assert png(w, 'classes') != p1 and f'<td>{NOISE}</td>' in html(w, 'classes')
    assert png(w, 'roc') == []                                          # drawn only when shown
    w.show('roc')
    seen = [png(w, 'roc')[0]]
    for name, value in [('threshold', .2), ('cls', 'Effusion'), ('seed', 1), ('labels', 'noisy')]:
        c[name].value = value
        seen.append(png(w, 'roc')[0])
    assert len(set(seen)) == len(seen), 'each control changes the ROC / PR view'
    w.show('threshold')
    t0 = html(w, 'threshold')
    c['threshold'].value = .7
    assert html(w, 'threshold') != t0 and '<th>F1</th>' in t0
    w.show('compare')
    assert (c['a'].value, c['b'].value) == ('ral', 'bce')
    k0 = png(w, 'compare')[0]
    c['ab_metric'].value = 'ap'
    assert png(w, 'compare')[0] != k0 and '<th>ΔAP</th>' in html(w, 'compare')
    w.show('curves')
    assert c['methods'].value == ('bce', 'ral')
    u0 = png(w, 'curves')[0]
    c['methods'].value = ('ral',)
    assert png(w, 'curves')[0] != u0
    assert all(len(o.outputs) for o in w.outs.values()) and plt.get_fignums() == []

def test_results_explorer_keeps_choices_and_fits_rare_classes(bench_dir):
    w = W.results_explorer(bench_dir / 'out')
    c = w.controls
    w.show('curves')
    c['methods'].value = ('ral',)
    c['select'].value = 'last'                                          # another model selection: the choice of methods stays
    assert c['methods'].value == ('ral',)
    assert [o for o in c['cls'].options if o[1] == 'Hernia'][0][0].endswith('training positives)')
    b = w.bench
    assert b.claims is not None and set(b.machines) == {p.stem.rsplit('.', 1)[0] for p in (bench_dir / 'out' / 'runs').glob('*.boot.npz')}
    fig = W.roc_view(b, 'Hernia', NOISE)                                 # a rare class: precision on a log axis, off the floor
    assert fig.axes[1].get_yscale() == 'log' and fig.axes[1].get_ylim()[0] > 0
    assert 'test positives' in fig.get_suptitle() and 'training positives' in fig.get_suptitle()
    ticks = W.plot_learning_curves(b, NOISE).axes[0].get_xticks()
    assert all(float(t).is_integer() for t in ticks)                    # whole epochs

def test_results_explorer_says_what_is_missing():
    g = W.results_explorer(GRID)
    g.controls['noise'].value = 'nih-like:0.4'
    opts = list(g.controls['method'].options)
    ran = W.load_bench(GRID).results.query("noise == 'nih-like:0.4'")['method']
    assert opts[0] == 'bce' and set(opts) == set(ran), opts                         # those that ran there
    g.show('roc')
    assert 'no test probabilities' in html(g, 'roc') and png(g, 'roc') == []
    g.show('threshold')
    assert 'save_probs' in html(g, 'threshold')
    plain = W.results_explorer(W.load_bench(GRID).results)              # a bare results frame: no curves
    plain.show('curves')
    assert 'no learning curves' in html(plain, 'curves')

def test_static_figures_are_readable(bench_dir):
    b = W.load_bench(bench_dir / 'out')
    ax = W.plot_class_bars(b, NOISE)
    words = readable(ax.figure)
    assert len(set(colours_of(ax))) == 2 and 'AUROC, clean test labels' in words
    assert any('95% interval of that mean (bootstrap over seeds, then test patients)' in t for t in words)
    fig = W.roc_view(b, 'Effusion', NOISE, threshold=.3)
    readable(fig)
    assert len({l.get_color() for l in fig.axes[0].lines[:-1:2]}) == 2                     # one colour per method
    readable(W.threshold_view(b, 'ral', NOISE, threshold=.3)[0])
    readable(W.compare_view(b, 'ral', 'bce', NOISE)[0])
    readable(W.plot_learning_curves(b, NOISE))
    g = W.load_bench(GRID)
    ax = W.plot_class_bars(g, 'symmetric:0.2')
    readable(ax.figure)
    cols = colours_of(ax)
    assert len(set(cols)) == len(cols) == len(set(g.rows('symmetric:0.2')['method']))
    fig = W.plot_learning_curves(g, 'symmetric:0.2')
    readable(fig)
    assert matplotlib.colors.to_hex(fig.axes[0].lines[0].get_color()) == matplotlib.colors.to_hex(g.colors['bce'])

def test_bad_input_is_named(tmp_path, bench_dir):
    with pytest.raises(FileNotFoundError, match='nowhere'): W.load_bench(tmp_path / 'nowhere')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='runs/\\*.csv'): W.load_bench(tmp_path / 'empty')
    bad = tmp_path / 'bad'; bad.mkdir()
    pd.read_csv(bench_dir / 'out' / 'results.csv').drop(columns='group').to_csv(bad / 'results.csv', index=False)
    with pytest.raises(KeyError, match=r"results\.csv: results frame: missing columns \['group'\]"): W.load_bench(bad)
    orphan = tmp_path / 'orphan' / 'runs'; orphan.mkdir(parents=True)
    np.savez(orphan / 'bce__none__seed0.boot.npz', **{'bce|best': np.zeros((2, 14))})
    (orphan / 'bce__none__seed1.csv').write_text(pd.read_csv(bench_dir / 'out' / 'results.csv').head(14).to_csv(index=False))
    with pytest.raises(ValueError, match=r'bce__none__seed0\.csv is missing'): W.load_bench(orphan.parent)
    b = W.load_bench(bench_dir / 'out')
    with pytest.raises(ValueError, match="'class:0.1'"): b.rows('class:0.1')
    with pytest.raises(KeyError, match="'Heart'"): W.roc_view(b, 'Heart')
    with pytest.raises(ValueError, match="'f1'"): W.plot_class_bars(b, metric='f1')
    with pytest.raises(W.NotAvailable, match="'twostage'"): W.class_deltas(b, 'twostage', 'bce')
    b.probs[('bce', NOISE, 0, 'best')] = b.probs[('bce', NOISE, 0, 'best')][:10]
    b._samples.clear()                                                   # noisy test labels: samples computed from the probabilities
    with pytest.raises(ValueError, match=r'shape \(10, 14\)'): b.samples('bce', NOISE, 0, 'best', 'noisy', 'ap')
    with pytest.raises(W.NotAvailable, match='phantom settings'): W.phantom_test_frame({'n': 10}, 'none', 0)

# --- the Grad-CAM explorer ---------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def cam(phantom):
    from cxr_noisy_lt.data import cxr_dls, test_dl
    from cxr_noisy_lt.learner import cxr_learner
    import fastai.callback.progress  # noqa: F401  learn.no_bar
    torch.manual_seed(0)
    frame = noisy_frame(phantom, NOISE, 0)
    learn = cxr_learner(cxr_dls(frame, 'nih14', phantom.images, bs=32, seed=0, device='cpu'), 'narrow_resnet10', metrics=[])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 2e-3)
    return learn, test_dl(learn.dls)

def test_gradcam_explorer_controls_redraw(cam, phantom):
    learn, dl = cam
    rows = dl.dataset.frame
    g = W.gradcam_explorer(learn, dl, phantom=phantom)
    assert 'layer4.0' in g.layer.value and 'found automatically' in g.layer.value
    c = g.controls
    seen = [png(g, 'image')[0]]
    assert len(png(g, 'image')) == 2                                    # the maps and the probabilities
    for name, value in [('image', 3), ('cls', 'Effusion'), ('method', 'eigencam')]:
        c[name].value = value
        seen.append(png(g, 'image')[0])
    g.number.value = 5                                                  # the number box beside the slider
    assert c['image'].value == 5
    seen.append(png(g, 'image')[0])
    assert len(set(seen)) == len(seen)
    g.show('gallery')
    shots = [png(g, 'gallery')[0]]
    flipped = W.image_subset(rows, 'with a flipped label', list(NIH14))
    c['subset'].value = 'with a flipped label'
    assert c['page'].max == -(-len(flipped) // 8) - 1 and c['page'].max >= 1
    assert c['g_cls'].value == W.FLIPPED                                 # each tile under its flipped class
    shots.append(png(g, 'gallery')[0])
    c['page'].value = 1
    shots.append(png(g, 'gallery')[0])
    c['g_cls'].value = 'Infiltration'
    shots.append(png(g, 'gallery')[0])
    assert len(set(shots)) == len(shots)
    g.show('methods')
    m0 = png(g, 'methods')[0]
    c['methods'].value = ('gradcam', 'xgradcam')
    assert png(g, 'methods')[0] != m0
    c['methods'].value = ()
    assert 'at least one CAM method' in html(g, 'methods')
    assert plt.get_fignums() == []

def test_gradcam_figures_are_readable(cam, phantom):
    learn, dl = cam
    rows = dl.dataset.frame
    both = np.intersect1d(W.image_subset(rows, 'with boxes', list(NIH14), phantom.boxes), W.image_subset(rows, 'with gaze', list(NIH14)))
    assert len(both), 'a test image with boxes and gaze'
    i = int(both[0])
    fig = W.gradcam_gallery(learn, dl, np.arange(6), W.TOP, 'gradcam', 'layer3', phantom.boxes, phantom.gaze)
    readable(fig)
    assert len(fig.axes) == 8 + 1                                       # 2 rows of 4 tiles (2 empty) and the colourbar
    assert all(a.get_title().startswith('image ') for a in fig.axes[:6])
    fig = W.gradcam_methods_view(learn, dl, i, W.LABELLED, ('gradcam', 'gradcam++', 'eigencam'), 'layer3', phantom.boxes, phantom.gaze)
    readable(fig)
    assert [a.get_title().split(',')[0] for a in fig.axes[1:4]] == ['GradCAM', 'GradCAMPlusPlus', 'EigenCAM']
    assert len(fig.axes[0].collections) > 0                             # the gaze contours
    fig = W.gradcam_view(learn, dl, i, W.LABELLED, 'gradcam', 'layer3', phantom.boxes, phantom.gaze)
    words = readable(fig)
    assert 'cells' in fig.get_suptitle() and any('gaze' in t for t in words)     # the maps' resolution; a legend for the gaze
    noisy, clean = W.frame_labels(rows.iloc[[i]], list(NIH14))
    clean = noisy[0].copy(); clean[[2, 5]] = 1 - clean[[2, 5]]          # two flipped labels
    ax = W.plot_image_probs(np.linspace(0, 1, 14), noisy[0], clean, list(NIH14))
    readable(ax.figure)
    red = [j for j, p in enumerate(ax.patches) if matplotlib.colors.to_hex(p.get_facecolor()) == '#c00000']
    assert red == [2, 5]
    assert [t.get_text() for t in ax.texts[:2]] == ['noisy', 'clean']
    with pytest.raises(ValueError, match='13 clean'): W.plot_image_probs(np.zeros(14), noisy[0], clean[:13], list(NIH14))
    with pytest.raises(KeyError, match=r"\['label'\]"): W.gradcam_explorer(learn, dl, boxes=phantom.boxes.drop(columns='label'))
    with pytest.raises(ValueError, match="'odd'"): W.image_subset(rows, 'odd', list(NIH14))
