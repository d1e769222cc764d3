"Cache and bad-input tests of `cxr_noisy_lt.phantom` (truncated, stale, corrupted and concurrent caches)."
import json, os, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import fastcore.test as fct
from cxr_noisy_lt.phantom import (make_phantom, check_cache, code_fingerprint, PhantomCacheError, PHANTOM_VERSION,
                                  default_cache_dir)

KW = dict(n=60, size=64, seed=5, gaze_frac=0.2, progress=False)

@pytest.fixture(scope='module')
def ref():
    "The in-memory phantom every cached one must equal."
    return make_phantom(cache_dir=False, **KW)

def _files(p):
    "The cache files of phantom `p`: images, header and side files."
    stem = p.path.name[:-len('.npy')]
    return {f.name[len(stem):]: f for f in p.path.parent.glob(stem + '*')}

def _same(p, ref):
    fct.test_eq(p.images.tobytes(), ref.images.tobytes())
    pd.testing.assert_frame_equal(p.frame, ref.frame)
    pd.testing.assert_frame_equal(p.boxes, ref.boxes)
    pd.testing.assert_frame_equal(p.fixations, ref.fixations)
    fct.test_eq(p.gaze.tobytes(), ref.gaze.tobytes())

def _rebuilds(d, *must_contain):
    "make_phantom in `d` warns (the message holding all of `must_contain`) and rebuilds."
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        p = make_phantom(cache_dir=d, **KW)
    msgs = [str(x.message) for x in w]
    assert any(all(s in m for s in must_contain) for m in msgs), msgs
    return p

def test_roundtrip(tmp_path, ref):
    p = make_phantom(cache_dir=tmp_path, **KW)
    assert isinstance(p.images, np.memmap) and not p.images.flags.writeable
    _same(p, ref)
    fct.test_eq(sorted(_files(p)), sorted(['.npy', '.json', '.frame.csv', '.boxes.csv', '.fix.csv', '.gaze.npy']))
    h = check_cache(p.path.with_name(p.path.name[:-4]), verify=True)
    fct.test_eq((h['version'], h['n'], h['size'], h['seed'], h['shape']), (PHANTOM_VERSION, 60, 64, 5, [60, 64, 64]))
    with warnings.catch_warnings():
        warnings.simplefilter('error')                   # a good cache is read silently
        _same(make_phantom(cache_dir=tmp_path, **KW), ref)

def test_other_params_other_file(tmp_path):
    a = make_phantom(cache_dir=tmp_path, **KW)
    b = make_phantom(cache_dir=tmp_path, **(KW | dict(seed=6)))
    fct.test_ne(a.path, b.path)
    fct.test_ne(a.images.tobytes(), b.images.tobytes())

@pytest.mark.parametrize('suffix', ['.npy', '.frame.csv', '.boxes.csv', '.fix.csv', '.gaze.npy'])
def test_truncated_rebuilds(tmp_path, ref, suffix):
    f = _files(make_phantom(cache_dir=tmp_path, **KW))[suffix]
    with open(f, 'r+b') as fh: fh.truncate(f.stat().st_size - 7)
    p = _rebuilds(tmp_path, f.name, 'truncated', 'rebuilding')
    _same(p, ref)
    check_cache(p.path.with_name(p.path.name[:-4]), verify=True)

def test_truncated_raises(tmp_path):
    f = make_phantom(cache_dir=tmp_path, **KW).path
    with open(f, 'r+b') as fh: fh.truncate(1000)
    with pytest.raises(PhantomCacheError, match=f.name) as e:
        make_phantom(cache_dir=tmp_path, on_bad_cache='raise', **KW)
    assert 'truncated' in str(e.value) and str(f) in str(e.value)

def test_missing_header_is_an_interrupted_build(tmp_path, ref):
    fs = _files(make_phantom(cache_dir=tmp_path, **KW))
    fs['.json'].unlink()
    with pytest.raises(PhantomCacheError, match='header is missing'):
        make_phantom(cache_dir=tmp_path, on_bad_cache='raise', **KW)
    _same(_rebuilds(tmp_path, fs['.json'].name, 'missing'), ref)

def test_missing_side_file(tmp_path, ref):
    f = _files(make_phantom(cache_dir=tmp_path, **KW))['.boxes.csv']
    f.unlink()
    with pytest.raises(PhantomCacheError, match=f.name):
        make_phantom(cache_dir=tmp_path, on_bad_cache='raise', **KW)
    _same(_rebuilds(tmp_path, f.name, 'missing'), ref)

def test_stale_version(tmp_path, ref):
    h = _files(make_phantom(cache_dir=tmp_path, **KW))['.json']
    d = json.loads(h.read_text()); d['version'] = PHANTOM_VERSION - 1; h.write_text(json.dumps(d))
    with pytest.raises(PhantomCacheError, match='stale') as e:
        make_phantom(cache_dir=tmp_path, on_bad_cache='raise', **KW)
    assert h.name in str(e.value)
    _same(_rebuilds(tmp_path, h.name, 'stale'), ref)
    fct.test_eq(json.loads(h.read_text())['version'], PHANTOM_VERSION)

def test_other_drawing_code_is_stale(tmp_path, ref):
    h = _files(make_phantom(cache_dir=tmp_path, **KW))['.json']
    d = json.loads(h.read_text()); fct.test_eq(d['code'], code_fingerprint()); fct.test_ne(d['code'], 'unknown')
    d['code'] = '00000000'; h.write_text(json.dumps(d))
    with pytest.raises(PhantomCacheError, match='other code'):
        make_phantom(cache_dir=tmp_path, on_bad_cache='raise', **KW)
    _same(_rebuilds(tmp_path, h.name, 'stale'), ref)

def test_header_with_other_parameters(tmp_path):
    h = _files(make_phantom(cache_dir=tmp_path, **KW))['.json']
    d = json.loads(h.read_text()); d['seed'] = 99; h.write_text(json.dumps(d))
    with pytest.raises(PhantomCacheError, match='other parameters'):
        make_phantom(cache_dir=tmp_path, on_bad_cache='raise', **KW)

def test_unreadable_header(tmp_path):
    h = _files(make_phantom(cache_dir=tmp_path, **KW))['.json']
    h.write_text('{"version": 1, ')
    with pytest.raises(PhantomCacheError, match='unreadable'):
        make_phantom(cache_dir=tmp_path, on_bad_cache='raise', **KW)

def test_corrupted_side_file_fails_crc(tmp_path):
    f = _files(make_phantom(cache_dir=tmp_path, **KW))['.frame.csv']
    b = bytearray(f.read_bytes()); i = b.index(b'PA') if b'PA' in b else b.index(b'AP'); b[i:i + 2] = b'XX'
    f.write_bytes(bytes(b))                               # same length, other content
    with pytest.raises(PhantomCacheError, match='CRC-32') as e:
        make_phantom(cache_dir=tmp_path, on_bad_cache='raise', **KW)
    assert f.name in str(e.value)

def test_corrupted_images_need_verify(tmp_path, ref):
    f = make_phantom(cache_dir=tmp_path, **KW).path
    with open(f, 'r+b') as fh: fh.seek(f.stat().st_size - 5); fh.write(bytes([255 - ref.images[-1, -1, -1]]))
    make_phantom(cache_dir=tmp_path, on_bad_cache='raise', **KW)          # lengths are right: not checked by default
    with pytest.raises(PhantomCacheError, match='CRC-32'):
        make_phantom(cache_dir=tmp_path, on_bad_cache='raise', verify=True, **KW)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter('always')
        _same(make_phantom(cache_dir=tmp_path, verify=True, **KW), ref)

def test_default_cache_dir(tmp_path, monkeypatch, ref):
    monkeypatch.setenv('CXR_NOISY_LT_CACHE', str(tmp_path / 'c'))
    fct.test_eq(default_cache_dir(), tmp_path / 'c')
    p = make_phantom(**KW)
    fct.test_eq(p.path.parent, tmp_path / 'c')
    _same(p, ref)

def test_no_cache(ref):
    p = make_phantom(cache_dir=False, **KW)
    assert not isinstance(p.images, np.memmap) and p.path is None
    _same(p, ref)

def test_concurrent_builds(tmp_path, ref):
    "Two processes building the same cache at once: both get the phantom, the cache is complete and valid."
    code = ("import sys; from cxr_noisy_lt.phantom import make_phantom; "
            f"p = make_phantom(n=60, size=64, seed=5, gaze_frac=0.2, progress=False, cache_dir=sys.argv[1]); "
            "print(p.images.sum())")
    procs = [subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs): assert p.returncode == 0, e.decode()
    fct.test_eq({int(o) for o, _ in outs}, {int(ref.images.astype(np.int64).sum())})
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _same(make_phantom(cache_dir=tmp_path, on_bad_cache='raise', verify=True, **KW), ref)
    assert not list(tmp_path.glob('*.tmp'))

@pytest.mark.parametrize('kw,msg', [
    (dict(n=0), 'n=0'), (dict(n=2.5), 'n=2.5'), (dict(n=200_000), 'n=200000'), (dict(size=16), 'size=16'),
    (dict(size=64.0), 'size=64.0'), (dict(seed=-1), 'seed=-1'), (dict(gaze_frac=1.5), 'gaze_frac=1.5'),
    (dict(splits=(0.7, 0.2)), 'splits'), (dict(splits=(0.7, 0.2, 0.2)), 'splits'),
    (dict(splits=(1.2, -0.1, -0.1)), 'splits'), (dict(on_bad_cache='ignore'), 'on_bad_cache')])
def test_bad_input(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg.replace('.', r'\.').replace('(', r'\(')):
        make_phantom(cache_dir=tmp_path, **(dict(n=20, progress=False) | kw))
    assert not list(tmp_path.iterdir())                   # nothing written
