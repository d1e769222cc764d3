"Bad input to cxr_noisy_lt.data gets a clear error naming the patient, split, column, class or file at fault."
import numpy as np
import pandas as pd
import pytest
from PIL import Image
import fastcore.test as fct
from cxr_noisy_lt.data import cxr_dls, check_patient_splits, toy_cxr, CXRDataset
from cxr_noisy_lt.data import test_dl as make_test_dl
from cxr_noisy_lt.labels import NIH14, UnknownClassError

CLS = NIH14[:4]

@pytest.fixture(scope='module')
def toy(): return toy_cxr(n=120, size=16, seed=0)

def test_patient_in_two_splits(toy):
    frame, images = toy
    bad = frame.copy()
    p = bad.loc[bad.split == 'train', 'patient'].iloc[0]
    bad.loc[bad.index[bad.patient == p][0], 'split'] = 'valid'
    fct.test_fail(lambda: check_patient_splits(bad), contains=repr(p))
    fct.test_fail(lambda: cxr_dls(bad, CLS, images), contains='1 patient(s)')
    with pytest.raises(ValueError, match=p): cxr_dls(bad, CLS, images)

def test_empty_split(toy):
    frame, images = toy
    no_valid = frame.assign(split=frame.split.replace('valid', 'train'))
    with pytest.raises(ValueError, match="split 'valid' is empty"): cxr_dls(no_valid, CLS, images)
    dls = cxr_dls(frame, CLS, images, bs=8)
    with pytest.raises(ValueError, match="split 'holdout' is empty"): make_test_dl(dls, frame, 'holdout')
    with pytest.raises(KeyError, match="'split'"): cxr_dls(frame.drop(columns='split'), CLS, images)

@pytest.mark.parametrize('value', [2, 'yes', -1])
def test_bad_label_value(toy, value):
    frame, images = toy
    bad = frame.copy()
    bad[CLS[2]] = bad[CLS[2]].astype(object)
    bad.loc[7, CLS[2]] = value
    with pytest.raises(ValueError) as e: cxr_dls(bad, CLS, images)
    fct.test_eq(CLS[2] in str(e.value) and repr(value) in str(e.value), True)

def test_unknown_class(toy):
    frame, images = toy
    with pytest.raises(KeyError, match='Cardiomegally'): cxr_dls(frame, CLS + ['Cardiomegally'], images)
    with pytest.raises(UnknownClassError, match='nih15'): cxr_dls(frame, 'nih15', images)
    with pytest.raises(KeyError, match='clean_Effusion'):
        cxr_dls(frame.drop(columns='clean_Effusion'), CLS, images, label_cols='clean')

def test_bad_image_reference(toy):
    frame, images = toy
    with pytest.raises(IndexError, match='outside'): cxr_dls(frame.assign(image=frame.image + 10_000), CLS, images)
    with pytest.raises(ValueError, match="integer indices"): cxr_dls(frame.assign(image='a.png'), CLS, images)

def test_missing_image_file(toy, tmp_path):
    frame, images = toy
    sub = frame.copy()
    for i in sub.index: Image.fromarray(images[i]).save(tmp_path/f"{i}.png")
    sub['image'] = [f"{i}.png" for i in sub.index]
    fct.test_eq(len(cxr_dls(sub, CLS, path=tmp_path, size=16, bs=8).train.one_batch()[0]), 8)
    (tmp_path/'5.png').unlink()
    with pytest.raises(FileNotFoundError, match='5.png'): cxr_dls(sub, CLS, path=tmp_path, size=16)
    # without the up-front check, the error comes when the image is read, still naming the file
    ds = CXRDataset(sub, CLS, path=tmp_path, size=16, check_files=False)
    with pytest.raises(FileNotFoundError, match='5.png'): ds[5]
