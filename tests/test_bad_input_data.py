"""Bad input data: a label outside {0, 1, NaN}, a class without any label, images of other modes and bit depths, nothing left
to load, a patient in two splits, a damaged cache. Each error or warning names the file, column, class or patient at fault;
a failed load writes nothing, and a damaged cache is rebuilt to exactly what it was."""
import json, shutil, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from PIL import Image
import fastcore.test as fct
from cxr_noisy_lt.datasets import (make_example, load_nih, load_mimic, load_padchest, load_chestmnist, build_cache,
                                   load_cache, cache_paths, cache_frame, read_xray, nvum_test_sets, CXRSource,
                                   DatasetError, ImageReadError, ImageCacheError, NIH_CSV, NIH_GOOGLE, NIH_LISTS,
                                   MIMIC_FILES, PADCHEST_CSV, NODULE_OR_MASS, PADCHEST)
from cxr_noisy_lt.datasets import core as datasets_core
from cxr_noisy_lt.labels import CHEXPERT14, NIH14, clean_col
from cxr_noisy_lt.metrics import metric_summary

@pytest.fixture(scope='module')
def base(tmp_path_factory):
    b = tmp_path_factory.mktemp('pristine')
    for k in ('nih', 'mimic', 'padchest', 'chestmnist'): make_example(k, b / k, size=28 if k == 'chestmnist' else 32)
    return b


# labels outside {0, 1, NaN}
@pytest.mark.parametrize('value,shown', [(2, '2.0'), ('yes', "'yes'"), (0.5, '0.5')])
def test_label_outside_01(copy, value, shown, snapshot):
    d = copy('mimic')
    p = d / (MIMIC_FILES['chexpert'] + '.gz')
    t = pd.read_csv(p)
    t['Edema'] = t['Edema'].astype(object); t.loc[3, 'Edema'] = value; t.to_csv(p, index=False)
    before = snapshot(d)
    with pytest.raises(DatasetError) as e: load_mimic(d)
    msg = str(e.value)
    for s in (str(p), "column 'Edema'", shown, f"study_id {t.loc[3, 'study_id']}", 'expected 1, 0, -1 or blank'): assert s in msg, (s, msg)
    fct.test_eq(snapshot(d), before)

def test_google_relabel_not_yes_no(copy):
    d = copy('nih')
    p = d / NIH_GOOGLE
    g = pd.read_csv(p); g.loc[1, NODULE_OR_MASS] = 'MAYBE'; g.to_csv(p, index=False)
    with pytest.raises(DatasetError) as e: load_nih(d)
    msg = str(e.value)
    for s in (str(p), f"column {NODULE_OR_MASS!r}", "'MAYBE'", repr(g.loc[1, 'Image Index']), 'YES or NO'): assert s in msg, (s, msg)

# a class column without any known label
def test_all_nan_class_column(copy):
    d = copy('mimic')
    p = d / (MIMIC_FILES['chexpert'] + '.gz')
    t = pd.read_csv(p); t['Edema'] = np.nan; t.to_csv(p, index=False)
    with warnings.catch_warnings(record=True) as w:                  # blanks are negatives by default: Edema all 0
        warnings.simplefilter('always')
        load_mimic(d)
    assert not [x for x in w if 'no known label' in str(x.message)], [str(x.message) for x in w]
    with pytest.warns(UserWarning, match='no known label') as w: s = load_mimic(d, blank='nan')
    msg = next(str(x.message) for x in w if 'no known label' in str(x.message))
    assert "'Edema'" in msg and str(p) in msg, msg
    st = s.stats(split=None)
    fct.test_eq((int(st.loc['Edema', 'unknown']), np.isnan(st.loc['Edema', 'prevalence'])), (len(s), True))
    # the summaries skip it: NaN AUROC, left out of the macro average
    rng = np.random.default_rng(0)
    y = s.frame[CHEXPERT14].to_numpy()
    ms = metric_summary(y, rng.random(y.shape), CHEXPERT14).set_index('class')
    assert np.isnan(ms.loc['Edema', 'auc'])
    defined = ms.loc[CHEXPERT14, 'auc'].dropna()
    fct.test_close(ms.loc['macro', 'auc'], defined.mean())
    fct.test_eq(int(ms.loc['macro', 'n_pos']), len(defined))
    # and training reads it as unknown targets
    f = s.frame.assign(split=np.where(np.arange(len(s)) % 2, 'valid', 'train'), patient=np.arange(len(s)))
    dls = CXRSource('mimic', f, CHEXPERT14, s.root).dls(bs=2, size=16, aug=False, stats=(0.5, 0.25))
    fct.test_eq(bool(dls.train.one_batch()[1][:, CHEXPERT14.index('Edema')].isnan().all()), True)

# images of other modes and bit depths
def _gray(d, rel):
    "The 8-bit image of an example file, as a PIL image."
    return Image.open(d / rel).convert('L')

def test_image_modes_are_converted(copy):
    d = copy('nih')
    f = load_nih(d).frame
    rels = f['image'].tolist()
    g = [np.asarray(_gray(d, r)) for r in rels[:6]]
    Image.fromarray(g[0]).convert('RGBA').save(d / rels[0])                           # 8-bit gray in RGBA
    Image.fromarray(g[1]).convert('RGB').save(d / rels[1])
    Image.fromarray(g[2]).convert('LA').save(d / rels[2])
    Image.fromarray(g[3]).convert('P').save(d / rels[3])                              # palette (adaptive: lossy)
    Image.fromarray((g[4].astype(np.uint16) * 4 + 1000)).save(d / rels[4])            # 16-bit, 10 bits of range used
    Image.fromarray(g[5]).convert('1').save(d / rels[5])                              # 1-bit
    s = load_nih(d, verify=True)
    fct.test_eq(len(s), len(f))
    datasets_core._NOTED.clear()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        a = [read_xray(d / r, 32) for r in rels[:6]] + [read_xray(d / rels[0], 32)]
    notes = [str(x.message) for x in w if 'converted to 8-bit grayscale' in str(x.message)]
    fct.test_eq([n.split(': ')[0] for n in notes], [str(d / r) for r in rels[:4]])      # one note per mode, naming the file
    fct.test_eq([n.split(': ')[1].split(' image')[0] for n in notes], ['RGBA', 'RGB', 'LA', 'P'])
    assert 'alpha dropped' in notes[0] and 'alpha dropped' not in notes[1]
    ref = [read_xray_like(x) for x in g]
    for k in (0, 1, 2): fct.test_eq(a[k], ref[k])                                     # gray content: exactly the 8-bit image
    assert np.abs(a[3].astype(int) - ref[3]).mean() < 3
    lo, hi = int(g[4].min()), int(g[4].max())                                          # 16 bit: stretched from its own range
    want16 = np.asarray(Image.fromarray(((g[4].astype(np.float32) - lo) / (hi - lo) * 255)).resize((32, 32), Image.BILINEAR))
    assert np.abs(a[4].astype(int) - want16).max() <= 1 and (a[4].min(), a[4].max()) == (0, 255)
    fct.test_eq(np.unique(a[5]).tolist(), [0, 255])                                  # 1 bit: black and white
    dls = s.dls(bs=4, size=32, aug=False, stats=(0.5, 0.25))
    fct.test_eq(dls.train.one_batch()[0].shape, (4, 1, 32, 32))

def read_xray_like(g):
    "What read_xray gives for an 8-bit gray array, at 32 px."
    return np.asarray(Image.fromarray(g).resize((32, 32), Image.BILINEAR, reducing_gap=3.0))

def test_image_mode_without_grayscale(copy, tmp_path):
    "A LAB image (no grayscale conversion in PIL) is an error naming the file; the cache can skip and count it."
    d = copy('nih')
    s = load_nih(d)
    victim = d / s.frame['image'].iloc[2]
    Image.open(victim).convert('RGB').convert('LAB').save(victim, format='TIFF')      # a LAB TIFF under the .png name
    with pytest.raises(ImageReadError, match=f"{victim}: cannot convert a LAB image to grayscale"): read_xray(victim, 32)
    with pytest.raises(ImageReadError, match=victim.name):
        build_cache(s.frame, d, 16, tmp_path / 'c', workers=0, progress=False)
    with pytest.warns(UserWarning, match=r'1 image\(s\) could not be read'):
        imgs = build_cache(s.frame, d, 16, tmp_path / 'c2', workers=0, progress=False, on_error='skip')
    cf = cache_frame(s.frame, imgs)
    fct.test_eq((len(cf), s.frame['image'].iloc[2] in cf['file'].tolist()), (len(s) - 1, False))
    a = np.array([[1., np.nan], [0., 2.]], np.float32)
    Image.fromarray(a).save(tmp_path / 'nan.tif')
    with pytest.raises(ImageReadError, match=r'nan.tif: the F image has non-finite pixel values'): read_xray(tmp_path / 'nan.tif', 8)

# nothing left to load
def test_no_image_left_after_views(copy, snapshot):
    d = copy('nih')
    p = d / NIH_CSV[0]
    t = pd.read_csv(p); t['View Position'] = 'PA'; t.to_csv(p, index=False)
    before = snapshot(d)
    with pytest.raises(DatasetError) as e: load_nih(d, views='AP')
    fct.test_eq(str(e.value), f"NIH ChestX-ray14: no image left to load from {p} ({len(t)} row(s); {len(t)} with views other "
                              f"than 'AP'); pass views='all' to keep every view")
    fct.test_eq(snapshot(d), before)

def test_no_image_left_without_labels(copy):
    d = copy('padchest')
    p = d / (PADCHEST_CSV + '.gz')
    t = pd.read_csv(p, keep_default_na=False); t['Labels'] = ''; t.to_csv(p, index=False)
    with pytest.raises(DatasetError, match='without labels') as e: load_padchest(d, views='all')
    assert str(e.value).startswith(f"PadChest: no image left to load from {p} ({len(t)} row(s); {len(t)} without labels)")
    d = copy('mimic')
    p = d / (MIMIC_FILES['chexpert'] + '.gz')
    t = pd.read_csv(p); t['study_id'] += 1; t.to_csv(p, index=False)                   # labels of no study of the metadata
    with pytest.raises(DatasetError, match='without labels') as e: load_mimic(d)
    assert str(p) in str(e.value)

def test_no_image_left_after_skipping(copy):
    d = copy('nih')
    f = load_nih(d).frame
    for r in f['image']: (d / r).write_bytes((d / r).read_bytes()[:40])               # every image cut short
    with pytest.warns(UserWarning, match='skipped'), pytest.raises(DatasetError) as e:
        load_nih(d, verify=True, on_error='skip')
    assert f"{len(f)} skipped (image missing or unreadable" in str(e.value), str(e.value)

def test_empty_protocol_test_set(base):
    pc = load_padchest(base / 'padchest')
    classes = NIH14
    f = pc.frame.copy()
    f[[clean_col(c) for c in PADCHEST]] = np.nan                                      # no clean label left
    with pytest.raises(DatasetError, match=r"PadChest: no test image left \(\d+ images, \d+ in split 'test', 0 of them labelled"):
        nvum_test_sets(classes, padchest=CXRSource('padchest', f, PADCHEST, pc.root))
    f = pc.frame.copy()
    f['clean_Scoliosis'] = np.where(f['clean_Scoliosis'].notna(), 1., np.nan)          # every clean image has a class the model lacks
    with pytest.raises(DatasetError, match=r'left out for a class the model lacks \(trim=False keeps them\)'):
        nvum_test_sets(classes, padchest=CXRSource('padchest', f, PADCHEST, pc.root))
    fct.test_eq(len(nvum_test_sets(classes, padchest=CXRSource('padchest', f, PADCHEST, pc.root), trim=False)['PadChest']) > 0, True)

# a patient in two splits
def test_patient_across_nih_lists(copy):
    d = copy('nih')
    f = load_nih(d).frame
    te = f[f['split'] == 'test']
    p = te['patient'].value_counts().index[0]
    assert (te['patient'] == p).sum() >= 2
    img = te.loc[te['patient'] == p, 'image'].iloc[0].rsplit('/', 1)[-1]
    lists = [d / n for n in NIH_LISTS]
    tv, ts = (l.read_text().split() for l in lists)
    lists[1].write_text('\n'.join(x for x in ts if x != img) + '\n'); lists[0].write_text('\n'.join(tv + [img]) + '\n')
    with pytest.raises(DatasetError) as e: load_nih(d)
    msg = str(e.value)
    for s in (f"patient {int(p)} has images in splits", str(lists[0]), str(lists[1]), "split='random'"): assert s in msg, (s, msg)
    load_nih(d, split='random')

def test_patient_across_mimic_splits(copy):
    d = copy('mimic')
    f = load_mimic(d).frame
    p = f['patient'].value_counts().index[0]
    rows = f[f['patient'] == p]
    assert len(rows) >= 2
    sp = d / (MIMIC_FILES['split'] + '.gz')
    t = pd.read_csv(sp)
    k = t['dicom_id'] == rows['dicom_id'].iloc[0]
    t.loc[k, 'split'] = 'test' if rows['split'].iloc[0] != 'test' else 'train'; t.to_csv(sp, index=False)
    with pytest.raises(DatasetError) as e: load_mimic(d)
    msg = str(e.value)
    assert f"patient {int(p)} has images in splits" in msg and str(sp) in msg, msg

# a damaged cache
def _cut(npy, js):
    with open(npy, 'r+b') as fh: fh.truncate(npy.stat().st_size // 2)
def _half_sidecar(npy, js): js.write_text(js.read_text()[:len(js.read_text()) // 2])

@pytest.mark.parametrize('damage,word,culprit', [(_cut, 'truncated', 'npy'), (_half_sidecar, 'unreadable', 'json')])
def test_damaged_cache_says_how_to_rebuild(base, tmp_path, damage, word, culprit):
    s = load_nih(base / 'nih')
    out = tmp_path / 'c'
    good = np.asarray(build_cache(s.frame, s.root, 16, out, workers=0, progress=False)).copy()
    npy, js = cache_paths(out)
    damage(npy, js)
    bad = dict(npy=npy, json=js)[culprit]
    with pytest.raises(ImageCacheError) as e: load_cache(out)
    msg = str(e.value)
    assert str(bad) in msg and word in msg and f"build_cache(frame, root, size, {str(npy)!r}) rebuilds it" in msg, msg
    with pytest.raises(ImageCacheError, match=r"pass on_bad_cache='rebuild' \(the default\) to rebuild it"):
        build_cache(s.frame, s.root, 16, out, workers=0, progress=False, on_bad_cache='raise')
    with pytest.warns(UserWarning, match='rebuilding'): r = build_cache(s.frame, s.root, 16, out, workers=0, progress=False)
    fct.test_eq(np.asarray(r).tobytes(), good.tobytes())                               # nothing lost
    load_cache(out, s.frame, 16, verify=True)

def test_chestmnist_damaged_memmap(copy):
    d = copy('chestmnist')
    mem = load_chestmnist(d)
    c = d / 'cache'
    load_chestmnist(d, mmap=True, cache_dir=c)
    npy = c / 'chestmnist_28.npy'
    with open(npy, 'r+b') as fh: fh.truncate(npy.stat().st_size - 100)
    with pytest.warns(UserWarning, match='damaged image cache') as w: m = load_chestmnist(d, mmap=True, cache_dir=c)
    assert any(str(npy) in str(x.message) and 'rebuilding' in str(x.message) for x in w)
    fct.test_eq(np.asarray(m.images).tobytes(), np.asarray(mem.images).tobytes())
    js = npy.with_suffix('.json'); js.write_text(js.read_text()[:10])                  # a half-written stamp: rebuilt
    del m
    m = load_chestmnist(d, mmap=True, cache_dir=c)
    fct.test_eq((np.asarray(m.images).tobytes(), json.loads(js.read_text())['n']), (np.asarray(mem.images).tobytes(), len(mem)))

def test_protocol_bad_arguments(base):
    "The protocol names what is wrong with its arguments."
    from cxr_noisy_lt.datasets import nvum_protocol, nvum_train_source
    from cxr_noisy_lt.learner import cxr_learner
    nih = load_nih(base / 'nih')
    learn = cxr_learner(nvum_train_source(nih).dls(bs=2, size=16, aug=False, stats=(0.5, 0.25)), arch='narrow_resnet10')
    with pytest.raises(ValueError, match='pass at least one test set'): nvum_protocol(learn)
    with pytest.raises(TypeError, match='pass a fastai Learner'): nvum_protocol(learn.model, nih=nih)
    with pytest.raises(TypeError, match=r"padchest=: pass a CXRSource, the dataset's folder or None; got int"):
        nvum_protocol(learn, padchest=3)
    with pytest.raises(FileNotFoundError, match='nowhere'): nvum_protocol(learn, openi=base / 'nowhere')
    with pytest.raises(ValueError, match='shares no class'): nvum_test_sets(['Scoliosis'], nih=nih)
    bare = CXRSource('nih', nih.frame.drop(columns='google_set'), nih.classes, nih.root)
    with pytest.raises(DatasetError, match="no 'google_set' column"): nvum_test_sets(learn.dls.classes, nih=bare)
