"The noise inspector's widget driven headlessly (set the controls, check what the output shows), and its bad-input errors."
import re
import numpy as np
import pandas as pd
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pytest
import fastcore.test as fct
from cxr_noisy_lt.inspector import (ALL, Flags, vote_flags, memory_flags, loss_flags, cleanlab_flags, top_flags,
                                    entry_labels, label_errors, label_matrix, plot_label_matrix, flag_scores,
                                    compare_flaggers, flagged_entries, inspector_view, noise_inspector, cross_fit)

CLASSES = ['Atelectasis', 'Cardiomegaly', 'Effusion']


def _data(n=60, seed=0):
    "A labels frame with clean and given labels (about 10% flipped), images, and two flaggers that see the flips differently."
    rng = np.random.default_rng(seed)
    clean = (rng.random((n, 3)) < [.4, .2, .3]).astype(float)
    flip = rng.random(clean.shape) < .1
    given = np.where(flip, 1 - clean, clean)
    rows = pd.DataFrame({'image': np.arange(n) + 100, 'split': 'train'})
    for j, c in enumerate(CLASSES): rows[c], rows[f'clean_{c}'] = given[:, j], clean[:, j]
    images = rng.integers(0, 255, (n + 100, 16, 16), dtype=np.uint8)
    p_good = np.clip(clean * .8 + rng.random(clean.shape) * .2, 0, 1)       # sees the clean labels
    p_bad = rng.random(clean.shape)                                         # sees nothing
    flaggers = {'good': vote_flags(p_good, given), 'random': vote_flags(p_bad, given)}
    return rows, images, flaggers


def _shown(w):
    "The PNG of the gallery and the two HTML tables the widget shows."
    o = w.out.outputs
    fct.test_eq(len(o), 3)
    return o[0]['data']['image/png'], o[1]['data']['text/html'], o[2]['data']['text/html']


def test_widget_follows_its_controls():
    rows, images, flaggers = _data()
    w = noise_inspector(flaggers, rows, CLASSES, images, n=6)
    fct.test_eq(list(w.controls['flagger'].options), ['good', 'random'])
    fct.test_eq(list(w.controls['cls'].options), [ALL] + CLASSES)
    png0, scores0, ent0 = _shown(w)
    assert '<td>good</td>' in scores0 and f'<td>{ALL}</td>' in scores0, scores0
    assert '<th>precision</th>' in scores0 and '<th>recall</th>' in scores0, scores0
    w.controls['cls'].value = 'Effusion'
    png1, scores1, ent1 = _shown(w)
    assert png1 != png0 and '<td>Effusion</td>' in scores1 and ent1 != ent0
    assert set(re.findall(r'<td>(Atelectasis|Cardiomegaly|Effusion)</td>', ent1)) == {'Effusion'}, ent1
    w.controls['flagger'].value = 'random'
    png2, scores2, ent2 = _shown(w)
    assert png2 != png1 and '<td>random</td>' in scores2 and '<td>good</td>' not in scores2
    fct.test_eq(plt.get_fignums(), [])                   # each figure is closed once drawn


def test_widget_numbers_are_the_scores():
    "What the widget's table says for a choice is `flag_scores` of that flagger and class."
    rows, images, flaggers = _data()
    err = label_errors(rows, CLASSES)
    good = flag_scores(flaggers['good'], err, CLASSES)
    assert good.loc[ALL, 'precision'] > flag_scores(flaggers['random'], err, CLASSES).loc[ALL, 'precision']
    _, t, shown = inspector_view(flaggers, rows, CLASSES, images, 'good', 'Cardiomegaly', n=4)
    fct.test_eq(t[['flagged', 'hits', 'wrong']].values.tolist(), [good.loc['Cardiomegaly', ['flagged', 'hits', 'wrong']].tolist()])
    fct.test_eq(len(shown), min(4, int(good.loc['Cardiomegaly', 'flagged'])))
    fct.test_eq(shown['score'].is_monotonic_decreasing, True)
    fct.test_eq((shown['wrong'] == (shown['given'] != shown['clean'])).all(), True)
    plt.close('all')


def test_without_clean_labels():
    "Real data has no clean labels: the gallery shows the given labels only, the table the number flagged."
    rows, images, flaggers = _data()
    real = rows.drop(columns=[f'clean_{c}' for c in CLASSES])
    w = noise_inspector(flaggers, real, CLASSES, images)
    _, scores, ent = _shown(w)
    assert '<th>flagged</th>' in scores and 'precision' not in scores and 'clean' not in ent, (scores, ent)
    with pytest.raises(KeyError, match=r"clean_Atelectasis"): label_errors(real, CLASSES)
    plt.close('all')


def test_bad_input_names_the_culprit():
    rows, images, flaggers = _data()
    y = entry_labels(rows, CLASSES)
    with pytest.raises(KeyError, match="'Hernia'"): inspector_view(flaggers, rows, CLASSES, images, cls='Hernia')
    with pytest.raises(KeyError, match="'loss'"): inspector_view(flaggers, rows, CLASSES, images, flagger='loss')
    with pytest.raises(ValueError, match="flagger 'good'"): noise_inspector(flaggers, rows.iloc[:10], CLASSES, images)
    with pytest.raises(ValueError, match='no flagger'): noise_inspector({}, rows, CLASSES, images)
    with pytest.raises(ValueError, match=r'shape \(5, 3\)'): vote_flags(np.zeros((5, 3)), y)
    with pytest.raises(ValueError, match='2 values for 3 classes'): memory_flags(np.zeros(y.shape), y, prior=[.1, .2])
    with pytest.raises(ValueError, match='needs a probability'): cleanlab_flags(np.full(y.shape, np.nan), y)
    with pytest.raises(ValueError, match='one count per class'): top_flags(flaggers['good'], [1, 2])
    with pytest.raises(KeyError, match="'Hernia'"): compare_flaggers(flaggers, label_errors(rows, CLASSES), CLASSES, cls='Hernia')
    with pytest.raises(KeyError, match=r"\['0→1'\]"): plot_label_matrix(label_matrix(rows, CLASSES).drop(columns='0→1'))
    with pytest.raises(KeyError, match='Effusion'): entry_labels(rows.drop(columns='Effusion'), CLASSES)
    with pytest.raises(ValueError, match='folds=1'): cross_fit(rows, images, CLASSES, folds=1)
    with pytest.raises(KeyError, match="'split'"): cross_fit(rows.drop(columns='split'), images, CLASSES)
    with pytest.raises(ValueError, match='index has duplicates'): cross_fit(pd.concat([rows, rows]), images, CLASSES)
    with pytest.raises(ValueError, match='cannot fill 3 folds'): cross_fit(rows.assign(patient=0), images, CLASSES, folds=3)


def test_flags_are_plain_arrays():
    "Flags of every flagger are [N, C] arrays: scores in [0, 1] or NaN where the label is unknown, boolean flags never on those."
    rows, _, _ = _data()
    rows.loc[rows.index[:5], 'Effusion'] = np.nan
    y = entry_labels(rows, CLASSES)
    rng = np.random.default_rng(1)
    for fl in (vote_flags(rng.random(y.shape), y), memory_flags(rng.normal(size=y.shape), y),
               loss_flags(rng.exponential(size=y.shape), y), cleanlab_flags(rng.random(y.shape), y)):
        assert isinstance(fl, Flags) and fl.flag.dtype == bool and fl.score.shape == y.shape
        fct.test_eq(np.isnan(fl.score), np.isnan(y))
        fct.test_eq(fl.flag[np.isnan(y)].any(), False)
        s = fl.score[~np.isnan(y)]
        assert ((s >= 0) & (s <= 1)).all()
