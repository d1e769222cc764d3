"Google's 'Nodule or mass' as its own clean target, its combined score, and the NVUM protocol, on folders in the real layouts."
import shutil
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
import fastcore.test as fct
import cxr_noisy_lt.datasets as D
from cxr_noisy_lt.datasets import (make_example, load_nih, load_openi, load_padchest, load_chexpert, nih_google, CXRSource,
                                   nodule_or_mass_score, nvum_train_source, nvum_test_sets, nvum_protocol, DatasetError,
                                   NODULE_OR_MASS, NIH_GOOGLE, NIH_CSV, PADCHEST, OPENI)
from cxr_noisy_lt.labels import NIH14, NO_FINDING, UnknownClassError, clean_col
from cxr_noisy_lt.learner import cxr_learner, predict_split
from cxr_noisy_lt.metrics import per_class_auc, metric_summary

NM = clean_col(NODULE_OR_MASS)

@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp('protocol')
    return {k: make_example(k, base / k, size=32) for k in ('nih', 'openi', 'padchest', 'chexpert')}

@pytest.fixture(scope='module')
def sources(roots):
    return dict(nih=load_nih(roots['nih']), openi=load_openi(roots['openi']), padchest=load_padchest(roots['padchest']),
                chexpert=load_chexpert(roots['chexpert']))

@pytest.fixture(scope='module')
def learn(sources):
    "A tiny model on NVUM's NIH classes (untrained: the protocol only needs its predictions to be reproducible)."
    torch.manual_seed(0)
    dls = nvum_train_source(sources['nih']).dls(bs=4, size=24, aug=False, stats=(0.5, 0.25))
    return cxr_learner(dls, arch='narrow_resnet10')

# the old public names of cxr_noisy_lt.datasets, before it was split by source
OLD_NAMES = ['ALL_VIEWS', 'EXAMPLES', 'NIH_VIEWS', 'NIH_SIZE', 'NIH_CSV', 'NIH_BBOX', 'NIH_GOOGLE', 'NIH_LISTS', 'CHEXPERT_VIEWS',
             'UNCERTAIN', 'MIMIC_VIEWS', 'MIMIC_FILES', 'MIMIC_SPLITS', 'MIMIC_META_COLUMNS', 'PADCHEST_CSV', 'PADCHEST_EXTRA',
             'PADCHEST', 'PADCHEST_KEYS', 'PADCHEST_NOT', 'PADCHEST_VIEWS', 'PADCHEST_FRONTAL', 'OPENI', 'OPENI_KEYS',
             'OPENI_NOT', 'OPENI_VIEWS', 'OPENI_REPORTS', 'OPENI_DICOM', 'OPENI_TSNE', 'CACHE_VERSION', 'CACHE_FORMAT',
             'CHESTMNIST_SIZES', 'CHESTMNIST_KEYS', 'CHESTMNIST_SPLITS', 'LOADERS', 'DatasetError', 'MissingColumnsError',
             'ImageReadError', 'xrv_data_dir', 'bundled', 'find_file', 'read_table', 'select_views', 'first_per_patient',
             'read_xray', 'verify_image', 'check_root', 'index_images', 'check_images', 'CXRSource', 'make_frame',
             'frame_hash', 'fake_xray', 'make_example', 'nih_labels', 'nih_google', 'nih_boxes', 'load_nih',
             'chexpert_labels', 'load_chexpert', 'load_mimic', 'term_classes', 'parse_terms', 'terms_matrix',
             'padchest_terms', 'load_padchest', 'mesh_terms', 'openi_table', 'load_openi', 'shared_classes', 'harmonise',
             'ImageCacheError', 'cache_paths', 'check_image_cache', 'load_cache', 'default_workers', 'build_cache',
             'cache_frame', 'DownloadError', 'chestmnist_file', 'download_chestmnist', 'load_chestmnist', 'load_dataset']

def test_every_name_still_in_datasets():
    "The package is split by source, but every public name is still importable from cxr_noisy_lt.datasets, and in `__all__`."
    missing = [n for n in OLD_NAMES if not hasattr(D, n)]
    assert not missing, missing
    assert set(OLD_NAMES) <= set(D.__all__) and len(D.__all__) == len(set(D.__all__))
    import importlib
    homes = {n: [m for m in ('core', 'cache', 'nih', 'chexpert', 'padchest', 'openi', 'chestmnist', 'protocol')
                 if n in importlib.import_module(f'cxr_noisy_lt.datasets.{m}').__all__] for n in D.__all__}
    fct.test_eq({n: h for n, h in homes.items() if len(h) != 1}, {})                   # each name in one module
    fct.test_eq((homes['load_nih'], homes['build_cache'], homes['load_openi'], homes['load_dataset']),
                (['nih'], ['cache'], ['openi'], ['core']))
    # a cache written under the old single module stays valid: the reader keeps its public name
    from cxr_noisy_lt.datasets.cache import _reader_name
    fct.test_eq(_reader_name(D.read_xray), 'cxr_noisy_lt.datasets.read_xray')

# 'Nodule or mass'
def _google_file(root, labels:dict):
    "Rewrite the folder's Google relabel file (the real format) with `labels` {image: (Pneumothorax, Nodule or mass)}."
    p = root / NIH_GOOGLE
    g = pd.read_csv(p)
    for img, (ptx, nm) in labels.items(): g.loc[g['Image Index'] == img, ['Pneumothorax', NODULE_OR_MASS]] = [ptx, nm]
    g.to_csv(p, index=False)
    return g

def test_nodule_or_mass_is_its_own_clean_target(roots, tmp_path):
    d = tmp_path / 'nih'; shutil.copytree(roots['nih'], d)
    g = pd.read_csv(d / NIH_GOOGLE)
    meta = pd.read_csv(d / NIH_CSV[0])
    # the case the expert label cannot split: NIH says Nodule (not Mass) and the experts say 'nodule or mass'
    img = g['Image Index'].iloc[0]
    meta.loc[meta['Image Index'] == img, 'Finding Labels'] = 'Nodule'; meta.to_csv(d / NIH_CSV[0], index=False)
    g = _google_file(d, {img: ('NO', 'YES'), g['Image Index'].iloc[1]: ('YES', 'NO')})
    f = load_nih(d).frame
    name = f['image'].str.rsplit('/', n=1).str[-1]
    row = f[name == img].iloc[0]
    fct.test_eq((row['Nodule'], row['Mass'], row[NODULE_OR_MASS], row[NM]), (1., 0., 1., 1.))
    assert np.isnan(row['clean_Nodule']) and np.isnan(row['clean_Mass'])          # the old loader said clean Mass = 1
    gi = g.set_index('Image Index')
    on = name.isin(gi.index).to_numpy()
    want = (gi.loc[name[on], NODULE_OR_MASS] == 'YES').astype(float).to_numpy()
    np.testing.assert_array_equal(f.loc[on, NM].to_numpy(), want)
    np.testing.assert_array_equal(f.loc[on, 'clean_Pneumothorax'].to_numpy(), (gi.loc[name[on], 'Pneumothorax'] == 'YES').to_numpy(float))
    for c in ('Nodule', 'Mass'):
        np.testing.assert_array_equal(f.loc[on, 'clean_' + c].to_numpy(), np.where(want == 0, 0., np.nan))
        assert f.loc[~on, 'clean_' + c].isna().all() and f.loc[~on, NM].isna().all()
    np.testing.assert_array_equal(f[NODULE_OR_MASS].to_numpy(), np.maximum(f['Nodule'], f['Mass']).to_numpy())
    fct.test_eq(nih_google(d / NIH_GOOGLE).set_index('image').loc[img, NODULE_OR_MASS], 1.)

def test_combined_score_and_nan_labels(sources):
    "max(p_Nodule, p_Mass) finds a nodule and a mass that each single output misses; NaN labels are left out of the AUROC."
    f = sources['nih'].frame
    on = f[NM].notna().to_numpy()
    y = f.loc[on, NM].to_numpy()
    assert 0 < y.sum() < len(y)
    rng = np.random.default_rng(0)
    p = rng.random((len(f), 14)) * 0.5
    s = nodule_or_mass_score(p, NIH14)
    np.testing.assert_array_equal(s, p[:, [NIH14.index('Nodule'), NIH14.index('Mass')]].max(1))
    fct.test_close(per_class_auc(f[NM], s)[0], roc_auc_score(y, s[on]))
    # one positive seen only by the Nodule output, and pretend a second one seen only by the Mass output
    pos = np.flatnonzero(on & (f[NM] == 1).to_numpy())[0]
    neg = np.flatnonzero(on & (f[NM] == 0).to_numpy())
    yy = f[NM].to_numpy().copy(); yy[neg[0]] = 1
    p[pos, NIH14.index('Nodule')], p[neg[0], NIH14.index('Mass')] = 0.99, 0.98
    fct.test_eq(per_class_auc(yy, nodule_or_mass_score(p, NIH14))[0], 1.0)
    assert per_class_auc(yy, p[:, NIH14.index('Nodule')])[0] < 1 and per_class_auc(yy, p[:, NIH14.index('Mass')])[0] < 1
    # the clean columns of the frame: Nodule and Mass have negatives only, so no AUROC, and the summary skips them
    ms = metric_summary(f[[clean_col(c) for c in NIH14]], p, NIH14).set_index('class')
    fct.test_eq((ms.loc['Nodule', 'n_pos'], np.isnan(ms.loc['Nodule', 'auc']), np.isnan(ms.loc['Effusion', 'auc'])), (0, True, True))
    fct.test_close(ms.loc['macro', 'auc'], ms.loc['Pneumothorax', 'auc'])
    fct.test_eq(int(ms.loc['macro', 'n_pos']), 1)                                   # one class defined
    with pytest.raises(UnknownClassError, match=r"\['Nodule', 'Mass'\]"): nodule_or_mass_score(p[:, :3], NIH14[:3])
    with pytest.raises(ValueError, match=r'expected \[N, 14\]'): nodule_or_mass_score(p[:, :13], NIH14)

# the NVUM training space
def test_nvum_train_source(sources):
    nih = sources['nih']
    f = nih.frame.copy(); f.loc[[0, 3], 'Consolidation'] = 1                       # make sure some images are dropped
    src = CXRSource('nih', f, nih.classes, nih.root, boxes=nih.boxes)
    nv = nvum_train_source(src)
    fct.test_eq(list(nv.classes), [c for c in NIH14 if c != 'Consolidation'] + [NO_FINDING])
    fct.test_eq(nv.frame['image'].tolist(), f.loc[f['Consolidation'] != 1, 'image'].tolist())
    fct.test_eq(nv.info['nvum'], dict(dropped=['Consolidation'], images_dropped=int((f['Consolidation'] == 1).sum())))
    np.testing.assert_array_equal(nv.frame[NO_FINDING].to_numpy(), f.loc[f['Consolidation'] != 1, NO_FINDING].to_numpy())
    fct.test_eq(list(nv.frame.columns).count(NO_FINDING), 1)
    assert nv.boxes['image'].isin(nv.frame['image']).all()
    cx = nvum_train_source(sources['chexpert'])
    fct.test_eq(list(cx.classes), ['Cardiomegaly', 'Edema', 'Pneumonia', 'Atelectasis', 'Pneumothorax', 'Pleural Effusion',
                                   'Fracture', NO_FINDING])
    with pytest.raises(ValueError, match='pass drop='): nvum_train_source(sources['openi'])
    with pytest.raises(UnknownClassError, match='Consolidaton'): nvum_train_source(nih, drop=['Consolidaton'])

# the protocol
def _auc(y, s): return per_class_auc(y, s)[0]

def test_nvum_protocol_table(learn, sources, roots):
    nih, oi, pc = sources['nih'], sources['openi'], sources['padchest']
    table, long = nvum_protocol(learn, nih=nih, openi=oi, padchest=pc, details=True)
    classes = list(learn.dls.classes)
    fct.test_eq(list(table.columns), ['NIH Google relabels', 'OpenI', 'PadChest'])
    fct.test_eq(list(table.index), [c for c in classes if c != NO_FINDING] + [NODULE_OR_MASS, 'mean'])
    sets = nvum_test_sets(classes, nih=nih, openi=oi, padchest=pc)
    for name, src in sets.items():
        probs, targs, rows = predict_split(learn, src.test_dl(learn.dls, split=None, label_cols='clean'))
        for j, c in enumerate(classes):
            if c == NO_FINDING: continue
            want = _auc(src.frame[clean_col(c)], probs[:, j])
            got = table.loc[c, name]
            assert (np.isnan(want) and np.isnan(got)) or abs(want - got) < 1e-12, (name, c, want, got)
            k = (long['test'] == name) & (long['class'] == c)
            fct.test_eq(long.loc[k, ['n_pos', 'n_neg']].values.tolist(),
                        [[int((src.frame[clean_col(c)] == 1).sum()), int((src.frame[clean_col(c)] == 0).sum())]])
        fct.test_close(table.loc['mean', name], table[name].drop('mean').dropna().mean())
        if name == 'NIH Google relabels':
            fct.test_close(table.loc[NODULE_OR_MASS, name], _auc(src.frame[NM], nodule_or_mass_score(probs, classes)))
            assert not np.isnan(table.loc['Pneumothorax', name]) and not np.isnan(table.loc[NODULE_OR_MASS, name])
    assert table.loc[NODULE_OR_MASS, ['OpenI', 'PadChest']].isna().all()
    # the test images: Google's test set in NIH's test split; OpenI frontal, all; PadChest physician-labelled
    g = sets['NIH Google relabels'].frame
    nf = nih.frame
    fct.test_eq(g['image'].tolist(), nf.loc[(nf['google_set'] == 'test') & (nf['split'] == 'test'), 'image'].tolist())
    for name, src, space in (('OpenI', oi, OPENI), ('PadChest', pc, PADCHEST)):
        f = src.frame
        cand = f[(f['split'] == 'test') & f[[clean_col(c) for c in space]].notna().any(axis=1)]
        other = [clean_col(c) for c in space if c not in classes]                   # classes the model lacks: trimmed
        fct.test_eq(sets[name].frame['image'].tolist(), cand.loc[~(cand[other] == 1).any(axis=1), 'image'].tolist())
        fct.test_eq(sets[name].info['protocol']['trimmed'], int((cand[other] == 1).any(axis=1).sum()))
    untrimmed = nvum_test_sets(classes, padchest=pc, trim=False)['PadChest']
    assert len(untrimmed) > len(sets['PadChest'])
    # folders instead of sources: the loaders' defaults, the same table
    t2 = nvum_protocol(learn, nih=roots['nih'], openi=str(roots['openi']), padchest=roots['padchest'])
    pd.testing.assert_frame_equal(t2, table)
    # another model (e.g. NVUM's EMA teacher) through model=
    other_model = cxr_learner(learn.dls, arch='narrow_resnet10').model
    t3 = nvum_protocol(learn, openi=oi, model=other_model)
    fct.test_eq(list(t3.columns), ['OpenI'])
    probs, _, _ = predict_split(learn, sets['OpenI'].test_dl(learn.dls, split=None, label_cols='clean'), model=other_model)
    j = classes.index('Fibrosis')
    want = _auc(sets['OpenI'].frame['clean_Fibrosis'], probs[:, j])
    assert (np.isnan(want) and np.isnan(t3.loc['Fibrosis', 'OpenI'])) or abs(t3.loc['Fibrosis', 'OpenI'] - want) < 1e-12

def test_protocol_chexpert_model(sources):
    "Trained on CheXpert: the 7 shared classes under CheXpert's names; the NIH relabels give Pneumothorax only."
    torch.manual_seed(0)
    dls = nvum_train_source(sources['chexpert']).dls(bs=2, size=24, aug=False, stats=(0.5, 0.25))
    learn = cxr_learner(dls, arch='narrow_resnet10')
    sets = nvum_test_sets(dls.classes, nih=sources['nih'], openi=sources['openi'], padchest=sources['padchest'])
    fct.test_eq(sets['OpenI'].info['relabelled']['Pleural Effusion'], 'Effusion')
    fct.test_eq(sets['OpenI'].info['relabelled']['Edema'], 'Edema')
    table = nvum_protocol(learn, nih=sources['nih'], openi=sources['openi'], padchest=sources['padchest'])
    fct.test_eq(list(table.index), ['Cardiomegaly', 'Edema', 'Pneumonia', 'Atelectasis', 'Pneumothorax', 'Pleural Effusion',
                                    'Fracture', 'mean'])
    fct.test_eq(table['NIH Google relabels'].drop('mean').notna().tolist(), [c == 'Pneumothorax' for c in table.index[:-1]])
    assert np.isnan(table.loc['Fracture', 'NIH Google relabels'])                     # NIH has no Fracture class

def test_protocol_google_set_and_own_labels(learn, sources, roots):
    nih = sources['nih']
    f = nih.frame.copy()
    gt = f.index[(f['google_set'] == 'test')]
    moved = f.loc[gt[0], 'patient']
    f.loc[f['patient'] == moved, 'split'] = 'train'                                    # as a random split might
    src = CXRSource('nih', f, nih.classes, nih.root)
    with pytest.warns(UserWarning, match=r"image\(s\) of Google's 'test' set are not in the test split"):
        sets = nvum_test_sets(learn.dls.classes, nih=src)
    assert moved not in set(sets['NIH Google relabels'].frame['patient'])
    # OpenI with MTI's automatic terms has no clean columns: scored against its own labels, with a warning
    auto = load_openi(roots['openi'], mesh='automatic')
    with pytest.warns(UserWarning, match='no clean labels'):
        t, long = nvum_protocol(learn, openi=auto, details=True)
    fct.test_eq(set(long['labels']), {'own'})
