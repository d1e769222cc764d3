"Loaders of cxr_noisy_lt.datasets on small folders in each dataset's real layout (`make_example`): frames, splits, options."
import numpy as np
import pandas as pd
import pytest
from PIL import Image
import fastcore.test as fct
from cxr_noisy_lt.datasets import (make_example, load_dataset, load_nih, load_chexpert, load_mimic, load_padchest,
                                   load_openi, read_xray, harmonise, CXRSource, PADCHEST, OPENI,
                                   NIH_LISTS, openi_table)
from cxr_noisy_lt.labels import NIH14, CHEXPERT14, clean_col
from cxr_noisy_lt.data import check_patient_splits

SPACES = {'nih': NIH14, 'chexpert': CHEXPERT14, 'mimic': CHEXPERT14, 'padchest': list(PADCHEST),
          'openi': list(OPENI), 'chestmnist': NIH14}
CLEAN = {'nih', 'chexpert', 'padchest', 'openi'}            # datasets with expert labels

@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    "One example folder per dataset, shared by the tests that only read them."
    base = tmp_path_factory.mktemp('examples')
    return {k: make_example(k, base / k, size=28 if k == 'chestmnist' else 48) for k in SPACES}

@pytest.fixture(scope='module')
def sources(roots):
    return {k: load_dataset(k, r, **({'views': 'all'} if k == 'openi' else {})) for k, r in roots.items()}

@pytest.mark.parametrize('name', list(SPACES))
def test_documented_columns(sources, name):
    s = sources[name]
    f, classes = s.frame, SPACES[name]
    assert isinstance(s, CXRSource) and len(f) > 0
    fct.test_eq(list(f.columns[:4]), ['image', 'patient', 'view', 'split'])
    fct.test_eq(list(f.columns[4:4 + len(classes)]), classes)
    fct.test_eq(list(s.classes), classes)
    assert isinstance(f.index, pd.RangeIndex)
    for c in classes:
        assert f[c].dtype == np.float32, c
        assert f[c].dropna().isin([0, 1]).all(), c
    clean = [clean_col(c) for c in classes]
    if name in CLEAN:
        fct.test_eq(list(f.columns[4 + len(classes):4 + 2 * len(classes)]), clean)
        assert f[clean].notna().any().any()
    else: assert not any(c in f for c in clean)
    assert set(f['split']) <= {'train', 'valid', 'test'}
    check_patient_splits(f)
    assert f['patient'].notna().all() and f['view'].notna().all()
    if name == 'chestmnist': fct.test_eq(f['image'].tolist(), list(range(len(f))))
    else:
        assert all(not str(p).startswith('/') and (s.root / p).is_file() for p in f['image'])

@pytest.mark.parametrize('name', list(SPACES))
def test_dls_batch(sources, name):
    "Every source gives cxr_dls batches of (image, target, idx), from files (JPEG, 8- and 16-bit PNG) or the array."
    s = sources[name]
    if (s.frame['split'] == 'train').sum() == 0 or (s.frame['split'] == 'valid').sum() == 0:
        s = CXRSource(s.name, s.frame.assign(split=np.where(np.arange(len(s.frame)) % 2, 'valid', 'train'),
                                             patient=np.arange(len(s.frame))), s.classes, s.root, s.images)
    dls = s.dls(bs=2, size=24, aug=False, stats=(0.5, 0.25))
    x, y, idx = dls.train.one_batch()
    fct.test_eq((tuple(x.shape), tuple(y.shape), tuple(idx.shape)), ((2, 1, 24, 24), (2, len(SPACES[name])), (2,)))
    assert torch_isfinite(x)

def torch_isfinite(x):
    import torch
    return bool(torch.isfinite(x).all())

def test_16bit_png_read_correctly(tmp_path):
    "A 12-bit PadChest-like PNG uses the full 8-bit range; PIL's own conversion would clip it to white."
    a = np.tile(np.linspace(0, 4095, 40), (30, 1)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / 'x.png')
    r = read_xray(tmp_path / 'x.png', 40)
    fct.test_eq((int(r.min()), int(r.max())), (0, 255))
    assert np.all(np.diff(r[15].astype(int)) >= 0)                 # monotone like the source
    naive = np.asarray(Image.open(tmp_path / 'x.png').convert('L'))
    assert (naive == 255).mean() > 0.9                               # what a naive reader would give

def test_nih_random_split_seed(roots):
    import shutil, tempfile
    from pathlib import Path
    d = Path(tempfile.mkdtemp()) / 'nih'
    shutil.copytree(roots['nih'], d)
    for p in NIH_LISTS: (d / p).unlink()
    a, b, c = load_nih(d, seed=1), load_nih(d, seed=1), load_nih(d, seed=2, test=0.3)
    fct.test_eq(a.frame['split'].tolist(), b.frame['split'].tolist())
    fct.test_eq(a.info['split'], dict(kind='random', valid=0.1, test=0.2, seed=1,
                                      note=f"{NIH_LISTS[0]} and {NIH_LISTS[1]} not found in {d}"))
    fct.test_eq(c.info['split']['seed'], 2)
    check_patient_splits(c.frame)
    r = load_nih(roots['nih'], split='random', seed=1)           # the lists are there but a random split is asked for
    fct.test_eq(r.info['split']['kind'], 'random')

def test_nih_official_lists_hold(roots, sources):
    f = sources['nih'].frame
    te = set((roots['nih'] / NIH_LISTS[1]).read_text().split())
    fct.test_eq(set(f.loc[f['split'] == 'test', 'image'].str.rsplit('/', n=1).str[-1]), te)
    assert not set(f.loc[f['split'] != 'test', 'patient']) & set(f.loc[f['split'] == 'test', 'patient'])

def test_nih_patient_sex_header(roots, tmp_path):
    "The official v2020 CSV names the column 'Patient Sex'; torchxrayvision's copy 'Patient Gender'. Both work."
    p = tmp_path / 'entries.csv'
    pd.read_csv(roots['nih'] / 'Data_Entry_2017_v2020.csv').rename(columns={'Patient Gender': 'Patient Sex'}).to_csv(p, index=False)
    f = load_nih(roots['nih'], csv=p).frame
    assert f['sex'].isin(['M', 'F']).all()

def test_nih_unique_patients_and_views(sources, roots):
    f = sources['nih'].frame
    u = load_nih(roots['nih'], unique_patients=True)
    fct.test_eq(len(u.frame), f['patient'].nunique())
    first = f.sort_values(['patient', 'followup']).drop_duplicates('patient')['image']
    fct.test_eq(set(u.frame['image']), set(first))
    fct.test_eq(u.info['duplicates_dropped'], len(f) - len(u.frame))
    pa = load_nih(roots['nih'], views=['PA'])
    fct.test_eq((set(pa.frame['view']), pa.info['other_views']), ({'PA'}, int((f['view'] == 'AP').sum())))

def test_chexpert_root_forms_and_no_expert_set(roots, tmp_path):
    import shutil
    base = roots['chexpert'] / 'CheXpert-v1.0-small'
    fct.test_eq(load_chexpert(base).frame.shape, load_chexpert(roots['chexpert']).frame.shape)
    d = tmp_path / 'CheXpert-v1.0-small'
    shutil.copytree(base, d)
    (d / 'valid.csv').unlink()
    f = load_chexpert(d).frame
    fct.test_eq(set(f['split']), {'train', 'valid'})
    fct.test_eq(f[[clean_col(c) for c in CHEXPERT14]].isna().all().all(), True)

def test_chexpert_views(roots):
    a = load_chexpert(roots['chexpert'], views='all').frame
    fct.test_eq('L' in set(a['view']), True)
    lat = load_chexpert(roots['chexpert'], views='L').frame
    fct.test_eq(set(lat['view']), {'L'})
    assert lat['image'].str.contains('lateral').all()

def test_mimic_random_split_and_labels(roots, sources):
    r = load_mimic(roots['mimic'], split='random', seed=4)
    fct.test_eq(r.info['split']['seed'], 4)
    check_patient_splits(r.frame)
    # labels are the study's row of the labels CSV
    lab = pd.read_csv(roots['mimic'] / 'mimic-cxr-2.0.0-chexpert.csv.gz').set_index(['subject_id', 'study_id'])
    f = load_mimic(roots['mimic'], uncertain='zeros', blank='nan').frame
    want = lab.loc[list(zip(f['patient'], f['study'])), CHEXPERT14].replace(-1, 0).to_numpy(np.float32)
    np.testing.assert_array_equal(f[CHEXPERT14].to_numpy(), want)

def test_padchest_test_random_and_clean(roots):
    r = load_padchest(roots['padchest'], test='random', seed=2, test_frac=0.3, valid=0.2)
    check_patient_splits(r.frame)
    fct.test_eq(r.info['split']['kind'], 'random')
    f = load_padchest(roots['padchest']).frame
    phys_pat = set(f.loc[f['method'] == 'Physician', 'patient'])
    fct.test_eq(set(f.loc[f['split'] == 'test', 'patient']), phys_pat)
    mixed = f[f['patient'].isin(phys_pat) & (f['method'] != 'Physician')]
    assert len(mixed) and mixed[[clean_col(c) for c in PADCHEST]].isna().all().all()    # network labels are not clean

def test_openi_views_and_split(roots):
    t = openi_table(roots['openi'])
    d = load_openi(roots['openi'], views='all', view_from='dicom').frame
    fct.test_eq(d['view'].tolist(), t['View Position'].fillna('UNKNOWN').tolist())
    b = load_openi(roots['openi'], views='all').frame
    fct.test_eq(b['view'].tolist(), t['tsne-view'].fillna(t['View Position']).fillna('UNKNOWN').tolist())
    r = load_openi(roots['openi'], views='all', split='random', seed=0, valid=0.2, test=0.3)
    check_patient_splits(r.frame)
    assert set(r.frame['split']) == {'train', 'valid', 'test'}

def test_harmonise_prints_mapping(sources, capsys):
    hs = harmonise(sources['nih'], sources['chexpert'], sources['mimic'])
    out = capsys.readouterr().out
    assert '7 shared classes' in out and 'Pleural Effusion' in out and 'not shared' in out
    fct.test_eq([list(h.classes) for h in hs], [['Atelectasis', 'Cardiomegaly', 'Effusion', 'Pneumonia', 'Pneumothorax',
                                                 'Consolidation', 'Edema']] * 3)
    fct.test_eq(hs[2].frame['Effusion'].fillna(-1).tolist(), sources['mimic'].frame['Pleural Effusion'].fillna(-1).tolist())
    with pytest.raises(ValueError, match='at least two'): harmonise(sources['nih'])

def test_cross_dataset_eval(sources):
    "Train-side DataLoaders from NIH, evaluation DataLoader on PadChest's clean labels (the NVUM protocol)."
    nih, pc = harmonise(sources['nih'], sources['padchest'], verbose=False)
    dls = nih.dls(bs=2, size=24, aug=False, stats=(0.5, 0.25))
    dl = pc.test_dl(dls, label_cols='clean')
    x, y, idx = dl.one_batch()
    fct.test_eq((x.shape[-1], y.shape[1]), (24, 14))
    with pytest.raises(ValueError, match="split 'holdout' is empty"): pc.test_dl(dls, 'holdout')
