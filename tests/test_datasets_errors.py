"Bad input to the loaders of cxr_noisy_lt.datasets gets a clear error naming the file, column, view or key at fault."
import shutil, time
from pathlib import Path
from urllib.error import URLError
from unittest import mock
import numpy as np
import pandas as pd
import pytest
import fastcore.test as fct
from cxr_noisy_lt.datasets import (make_example, load_dataset, load_nih, load_chexpert, load_mimic, load_padchest,
                                   load_openi, load_chestmnist, chestmnist_file, DatasetError, MissingColumnsError,
                                   ImageReadError, DownloadError, PADCHEST_CSV, MIMIC_FILES, OPENI_REPORTS, NIH_LISTS)

NAMES = ['nih', 'chexpert', 'mimic', 'padchest', 'openi']

@pytest.fixture(scope='module')
def base(tmp_path_factory):
    b = tmp_path_factory.mktemp('pristine')
    for k in NAMES + ['chestmnist']: make_example(k, b / k, size=28 if k == 'chestmnist' else 32)
    return b

# the image folder
@pytest.mark.parametrize('name', NAMES + ['chestmnist'])
def test_missing_folder(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / 'nowhere')):
        load_dataset(name, tmp_path / 'nowhere')

def test_folder_without_images(tmp_path, base):
    shutil.copy(base / 'nih' / 'Data_Entry_2017_v2020.csv', tmp_path)
    with pytest.raises(FileNotFoundError, match='no image files found under') as e: load_nih(tmp_path)
    assert str(tmp_path) in str(e.value) and 'images_001/images' in str(e.value)

def test_mimic_without_files_folder(copy):
    d = copy('mimic'); shutil.rmtree(d / 'files')
    with pytest.raises(FileNotFoundError, match=str(d / 'files')): load_mimic(d)

# a missing or corrupt image: error by default, skip-and-count when asked
@pytest.mark.parametrize('name', NAMES)
def test_missing_image(copy, name):
    d = copy(name)
    kw = {'views': 'all'} if name == 'openi' else {}
    full = load_dataset(name, d, **kw)
    victim = full.root / full.frame['image'].iloc[1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name) as e: load_dataset(name, d, **kw)
    assert "on_error='skip'" in str(e.value) and '1 image file(s) missing' in str(e.value)
    with pytest.warns(UserWarning, match='skipped'): s = load_dataset(name, d, on_error='skip', **kw)
    fct.test_eq(len(s.frame), len(full.frame) - 1)
    fct.test_eq((len(s.skipped), s.skipped['reason'].tolist(), s.info['skipped']), (1, ['missing'], 1))
    assert victim.name in s.skipped['image'].iloc[0]
    assert 'skipped' in repr(s)

@pytest.mark.parametrize('name', ['nih', 'padchest', 'chexpert'])
def test_corrupt_image(copy, name):
    d = copy(name)
    full = load_dataset(name, d)
    victim = full.root / full.frame['image'].iloc[2]
    victim.write_bytes(victim.read_bytes()[:len(victim.read_bytes()) // 3])          # truncated file
    load_dataset(name, d)                                                            # not decoded unless asked
    with pytest.raises(ImageReadError, match=victim.name): load_dataset(name, d, verify=True)
    with pytest.warns(UserWarning, match='1 unreadable'): s = load_dataset(name, d, verify=True, on_error='skip')
    fct.test_eq(len(s.frame), len(full.frame) - 1)
    assert s.skipped['reason'].iloc[0].startswith('unreadable')
    # reading it for training names the file too
    dls = full.dls(bs=1, size=16, aug=False, stats=(0.5, 0.25))
    with pytest.raises(ImageReadError, match=victim.name): full.test_dl(dls, split=None).dataset[2]

def test_on_error_value(base):
    with pytest.raises(ValueError, match="on_error='ignore'"): load_nih(base / 'nih', on_error='ignore')

# an unknown view
@pytest.mark.parametrize('name,view', [('nih', 'LATERAL'), ('chexpert', 'Lateral'), ('mimic', 'PA LAT'),
                                       ('padchest', 'AP_horizontal'), ('openi', 'Frontal')])
def test_unknown_view(base, name, view):
    with pytest.raises(ValueError, match=f"unknown view {view!r}") as e: load_dataset(name, base / name, views=view)
    assert 'known views' in str(e.value) and "'frontal'" in str(e.value)
    with pytest.raises(ValueError, match='views is empty'): load_dataset(name, base / name, views=[])

# a CSV with missing columns
@pytest.mark.parametrize('name,file,column', [
    ('nih', 'Data_Entry_2017_v2020.csv', 'Patient ID'),
    ('nih', 'Data_Entry_2017_v2020.csv', 'Finding Labels'),
    ('nih', 'BBox_List_2017.csv', 'Finding Label'),
    ('chexpert', 'CheXpert-v1.0-small/train.csv', 'Frontal/Lateral'),
    ('chexpert', 'CheXpert-v1.0-small/valid.csv', 'Pleural Effusion'),
    ('mimic', MIMIC_FILES['metadata'] + '.gz', 'ViewPosition'),
    ('mimic', MIMIC_FILES['split'] + '.gz', 'split'),
    ('mimic', MIMIC_FILES['chexpert'] + '.gz', 'Edema'),
    ('padchest', PADCHEST_CSV + '.gz', 'MethodLabel'),
    ('padchest', PADCHEST_CSV + '.gz', 'Labels')])
def test_csv_missing_column(copy, name, file, column):
    d = copy(name)
    p = d / file
    pd.read_csv(p).drop(columns=[column]).to_csv(p, index=False)
    with pytest.raises(MissingColumnsError) as e: load_dataset(name, d)
    msg = str(e.value)
    assert str(p) in msg and repr(column) in msg, msg

def test_unreadable_csv(copy):
    d = copy('padchest')
    (d / (PADCHEST_CSV + '.gz')).write_bytes(b'\x1f\x8b\x08 not really gzip')
    with pytest.raises(DatasetError, match=PADCHEST_CSV): load_padchest(d)

def test_nih_unknown_finding(copy):
    d = copy('nih')
    p = d / 'Data_Entry_2017_v2020.csv'
    t = pd.read_csv(p); t.loc[3, 'Finding Labels'] = 'Effusion|Pneumothorax2'; t.to_csv(p, index=False)
    with pytest.raises(DatasetError, match="unknown finding 'Pneumothorax2'") as e: load_nih(d)
    assert str(p) in str(e.value)

def test_nih_list_inconsistent(copy):
    d = copy('nih')
    te = (d / NIH_LISTS[1]).read_text().split()
    (d / NIH_LISTS[1]).write_text('\n'.join(te[1:]))            # one image in no list
    with pytest.raises(DatasetError, match=te[0]): load_nih(d)
    (d / NIH_LISTS[1]).write_text('\n'.join(te + (d / NIH_LISTS[0]).read_text().split()[:1]))
    with pytest.raises(DatasetError, match='in both'): load_nih(d)

def test_chexpert_bad_label_value(copy):
    d = copy('chexpert')
    p = d / 'CheXpert-v1.0-small' / 'train.csv'
    t = pd.read_csv(p); t.loc[2, 'Edema'] = 2; t.to_csv(p, index=False)
    with pytest.raises(DatasetError, match="column 'Edema' has 2.0") as e: load_chexpert(d)
    assert str(p) in str(e.value) and t.loc[2, 'Path'] in str(e.value)
    for bad in (dict(uncertain='U-Ones'), dict(blank='ones')):
        with pytest.raises(ValueError, match=list(bad)[0]): load_chexpert(d, **bad)

def test_mimic_split_file(copy):
    d = copy('mimic')
    p = d / (MIMIC_FILES['split'] + '.gz')
    t = pd.read_csv(p); t.loc[0, 'split'] = 'holdout'; t.to_csv(p, index=False)
    with pytest.raises(DatasetError, match="'holdout'"): load_mimic(d)
    p.unlink()
    with pytest.raises(FileNotFoundError, match="split='random'"): load_mimic(d)
    load_mimic(d, split='random')
    with pytest.raises(FileNotFoundError, match=MIMIC_FILES['negbio']): load_mimic(d, labeler='negbio')

def test_padchest_bad_method(copy):
    d = copy('padchest')
    p = d / (PADCHEST_CSV + '.gz')
    t = pd.read_csv(p, keep_default_na=False); t.loc[0, 'MethodLabel'] = 'Radiologist'; t.to_csv(p, index=False)
    with pytest.raises(DatasetError, match="'Radiologist'"): load_padchest(d)

def test_openi_bad_reports(copy):
    d = copy('openi')
    (d / OPENI_REPORTS).write_bytes(b'not a tar file')
    with pytest.raises(DatasetError, match=OPENI_REPORTS): load_openi(d)

# ChestMNIST .npz files
def _npz(path, **arrays): np.savez(path, **arrays)

def test_npz_wrong_keys(copy):
    d = copy('chestmnist')
    z = dict(np.load(chestmnist_file(d)))
    z['validation_images'] = z.pop('val_images')
    _npz(chestmnist_file(d), **z)
    with pytest.raises(MissingColumnsError) as e: load_chestmnist(d)
    msg = str(e.value)
    assert str(chestmnist_file(d)) in msg and "'val_images'" in msg and 'validation_images' in msg, msg

def test_npz_not_a_zip(tmp_path):
    chestmnist_file(tmp_path).write_bytes(b'garbage')
    with pytest.raises(DatasetError, match='not a readable .npz'): load_chestmnist(tmp_path)

def test_npz_wrong_shapes(copy):
    d = copy('chestmnist')
    z = dict(np.load(chestmnist_file(d)))
    z2 = z | {'test_images': z['test_images'][:, :20, :20]}
    _npz(chestmnist_file(d), **z2)
    with pytest.raises(DatasetError, match="'test_images' is uint8"): load_chestmnist(d)
    z3 = z | {'train_labels': z['train_labels'][:, :13]}
    _npz(chestmnist_file(d), **z3)
    with pytest.raises(DatasetError, match="'train_labels'"): load_chestmnist(d)
    z4 = z | {'val_labels': z['val_labels'] * 2}
    _npz(chestmnist_file(d), **z4)
    with pytest.raises(DatasetError, match="'val_labels'"): load_chestmnist(d)

def test_chestmnist_missing_file_and_failed_download(tmp_path):
    with pytest.raises(FileNotFoundError, match='download=True') as e: load_chestmnist(tmp_path, size=128)
    assert 'chestmnist_128.npz' in str(e.value) and 'zenodo.org' in str(e.value)
    t = time.perf_counter()
    with mock.patch('torchvision.datasets.utils.download_url', side_effect=URLError('no network')):
        with pytest.raises(DownloadError) as e: load_chestmnist(tmp_path, size=224, download=True)
    assert time.perf_counter() - t < 10
    msg = str(e.value)
    for s in ('chestmnist_224.npz', 'no network', 'zenodo.org', 'MD5', str(tmp_path)): assert s in msg, (s, msg)
    assert not chestmnist_file(tmp_path, 224).exists()

def test_chestmnist_download_through_medmnist(tmp_path, base):
    "With internet, medmnist's download puts the file in place and it loads (the network is a stub copying a file)."
    src = chestmnist_file(base / 'chestmnist')
    def fake(url, root, filename, md5):
        assert 'chestmnist.npz' in url and md5
        shutil.copy(src, Path(root) / filename)
    with mock.patch('torchvision.datasets.utils.download_url', side_effect=fake):
        s = load_chestmnist(tmp_path / 'new', download=True)
    fct.test_eq(len(s.frame), 40)

def test_bad_split_arguments(base):
    with pytest.raises(ValueError, match='valid=1.5'): load_nih(base / 'nih', valid=1.5)
    with pytest.raises(ValueError, match="split='patient'"): load_nih(base / 'nih', split='patient')
    with pytest.raises(ValueError, match="test='all'"): load_padchest(base / 'padchest', test='all')
    with pytest.raises(ValueError, match="mesh='minor'"): load_openi(base / 'openi', mesh='minor')
