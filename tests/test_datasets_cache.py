"The preprocessing cache of cxr_noisy_lt.datasets: parallel, resumable after an interruption, verified, bad images."
import json, os, subprocess, sys, textwrap, threading, time, warnings
from pathlib import Path
import numpy as np
import pytest
import fastcore.test as fct
from cxr_noisy_lt.datasets import (make_example, load_nih, build_cache, load_cache, cache_frame, check_image_cache,
                                   cache_paths, read_xray, ImageCacheError, ImageReadError, CACHE_VERSION)

SIZE, CHUNK = 24, 3
HELPER = '''
"Readers for the cache tests: log each call to $CXR_TEST_LOG, sleep $CXR_TEST_SLEEP, fail on $CXR_TEST_POISON."
import os, time
from cxr_noisy_lt.datasets import read_xray
def reader(fn, size):
    if os.environ.get('CXR_TEST_POISON') and os.environ['CXR_TEST_POISON'] in str(fn): raise OSError(f"{fn}: poisoned")
    if os.environ.get('CXR_TEST_SLEEP'): time.sleep(float(os.environ['CXR_TEST_SLEEP']))
    if os.environ.get('CXR_TEST_LOG'):
        with open(os.environ['CXR_TEST_LOG'], 'a') as f: f.write(f"{fn}\\n")
    return read_xray(fn, size)
'''

@pytest.fixture(scope='module')
def helper(tmp_path_factory):
    d = tmp_path_factory.mktemp('helper')
    (d / 'cachehelp.py').write_text(HELPER)
    sys.path.insert(0, str(d))
    import cachehelp
    yield cachehelp
    sys.path.remove(str(d))

@pytest.fixture(scope='module')
def src(tmp_path_factory):
    return load_nih(make_example('nih', tmp_path_factory.mktemp('ex') / 'nih', size=40))

@pytest.fixture(scope='module')
def ref(src):
    "The cached images as read_xray gives them, one by one."
    return np.stack([read_xray(src.root / p, SIZE) for p in src.frame['image']])

def _build(src, out, **kw):
    return build_cache(src.frame, src.root, SIZE, out, **(dict(workers=0, progress=False, chunk=CHUNK) | kw))

def _log(p): return p.read_text().splitlines() if p.exists() else []

def _left(h, n, chunk=CHUNK):
    "Images in the chunks not done yet."
    return sum(min(n, (k + 1) * chunk) - k * chunk for k, c in enumerate(h['done']) if c == '0')

def test_serial_and_parallel(src, ref, tmp_path):
    a = _build(src, tmp_path / 'a')
    b = _build(src, tmp_path / 'b', workers=2, progress=True)
    fct.test_eq(np.asarray(a).tobytes(), ref.tobytes())
    fct.test_eq(np.asarray(b).tobytes(), ref.tobytes())
    assert isinstance(b, np.memmap) and not b.flags.writeable
    h = check_image_cache(tmp_path / 'b', src.frame, SIZE, verify=True)
    fct.test_eq((h['complete'], h['n'], h['size'], h['version'], h['bad']), (True, len(src), SIZE, CACHE_VERSION, {}))
    fct.test_eq(sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('b.')), ['b.json', 'b.lock', 'b.npy'])

def test_pool_error_names_file_and_resumes(src, ref, tmp_path, helper, monkeypatch):
    n, log = len(src), tmp_path / 'log.txt'
    victim = src.frame['image'].iloc[n // 2].rsplit('/', 1)[-1]
    monkeypatch.setenv('CXR_TEST_POISON', victim); monkeypatch.setenv('CXR_TEST_LOG', str(log))
    with pytest.raises(OSError, match=victim): _build(src, tmp_path / 'c', workers=2, reader=helper.reader)
    h = json.loads((tmp_path / 'c.json').read_text())
    assert not h['complete'] and '0' in h['done']
    with pytest.raises(ImageCacheError, match='incomplete'): load_cache(tmp_path / 'c')
    monkeypatch.delenv('CXR_TEST_POISON'); log.unlink(missing_ok=True)
    r = _build(src, tmp_path / 'c', workers=2, reader=helper.reader)
    assert 0 < _left(h, n) < n
    fct.test_eq(len(_log(log)), _left(h, n))                       # only the chunks left were decoded
    fct.test_eq(np.asarray(r).tobytes(), ref.tobytes())

def test_killed_build_resumes(src, ref, tmp_path, helper, monkeypatch):
    "A build killed mid-way (like a crash or Ctrl-C) leaves a resumable cache; the next call decodes only the rest."
    out, n = tmp_path / 'k', len(src)
    code = textwrap.dedent(f'''
        import sys; sys.path.insert(0, {str(Path(helper.__file__).parent)!r})
        import cachehelp
        from cxr_noisy_lt.datasets import load_nih, build_cache
        s = load_nih({str(src.root)!r})
        build_cache(s.frame, s.root, {SIZE}, {str(out)!r}, workers=0, progress=False, chunk={CHUNK}, reader=cachehelp.reader)
    ''')
    env = dict(os.environ, CXR_TEST_SLEEP='0.25')
    p = subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    js, t0 = cache_paths(out)[1], time.time()
    try:
        while time.time() - t0 < 300:
            if js.exists():
                try: h = json.loads(js.read_text())
                except ValueError: h = {}
                if h.get('done', '').count('1') >= 2: break
            assert p.poll() is None, p.communicate()[1].decode()[-2000:]
            time.sleep(0.02)
        p.kill()
    finally: p.wait()
    h = json.loads(js.read_text())
    assert not h['complete'] and 2 <= h['done'].count('1') < len(h['done']), h['done']
    log = tmp_path / 'log.txt'
    monkeypatch.setenv('CXR_TEST_LOG', str(log))
    r = _build(src, out, reader=helper.reader)
    fct.test_eq(len(_log(log)), _left(h, n))
    fct.test_eq(np.asarray(r).tobytes(), ref.tobytes())

def _truncate(npy, js): 
    with open(npy, 'r+b') as f: f.truncate(npy.stat().st_size - 10)
def _no_sidecar(npy, js): js.unlink()
def _bad_sidecar(npy, js): js.write_text('{"format": ')
def _old_version(npy, js):
    h = json.loads(js.read_text()); h['version'] = CACHE_VERSION - 1; js.write_text(json.dumps(h))
def _no_data(npy, js): npy.unlink()

@pytest.mark.parametrize('damage,words', [(_truncate, ['truncated', '.npy']), (_no_sidecar, ['sidecar is missing', '.json']),
                                          (_bad_sidecar, ['unreadable', '.json']), (_old_version, ['stale', 'version']),
                                          (_no_data, ['data file is missing', '.npy'])])
def test_damaged_cache_is_detected_and_rebuilt(src, ref, tmp_path, damage, words):
    out = tmp_path / 'd'
    _build(src, out)
    damage(*cache_paths(out))
    with pytest.raises(ImageCacheError) as e: _build(src, out, on_bad_cache='raise')
    assert all(w in str(e.value) for w in words) and str(out) in str(e.value), str(e.value)
    with pytest.raises(ImageCacheError): load_cache(out)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        r = _build(src, out)
    assert any('rebuilding' in str(x.message) and words[0] in str(x.message) for x in w), [str(x.message) for x in w]
    fct.test_eq(np.asarray(r).tobytes(), ref.tobytes())
    load_cache(out, src.frame, SIZE, verify=True)

@pytest.mark.parametrize('change,word', [('size', 'size (24 != 16)'), ('frame', 'image list'), ('chunk', 'chunk=3')])
def test_stale_cache(src, tmp_path, change, word):
    out = tmp_path / 's'
    _build(src, out)
    kw = dict(on_bad_cache='raise')
    with pytest.raises(ImageCacheError, match=word.replace('(', r'\(').replace(')', r'\)')):
        if change == 'size': build_cache(src.frame, src.root, 16, out, workers=0, progress=False, chunk=CHUNK, **kw)
        elif change == 'frame': build_cache(src.frame.iloc[1:], src.root, SIZE, out, workers=0, progress=False, chunk=CHUNK, **kw)
        else: _build(src, out, chunk=CHUNK + 1, **kw)
    with pytest.warns(UserWarning, match='rebuilding'):
        r = build_cache(src.frame.iloc[1:], src.root, SIZE, out, workers=0, progress=False, chunk=CHUNK)
    fct.test_eq(len(r), len(src) - 1)

def test_verify_catches_corruption(src, ref, tmp_path):
    out = tmp_path / 'v'
    a = _build(src, out)
    npy = Path(a.filename); del a
    with open(npy, 'r+b') as f: f.seek(npy.stat().st_size - 3); f.write(bytes([255 - ref[-1, -1, -3]]))
    load_cache(out)                                                             # the length is right
    with pytest.raises(ImageCacheError, match='CRC-32') as e: load_cache(out, verify=True)
    assert f"images {((len(src) - 1) // CHUNK) * CHUNK} to {len(src) - 1}" in str(e.value)
    with pytest.warns(UserWarning, match='CRC-32'): r = _build(src, out, verify=True)
    fct.test_eq(np.asarray(r).tobytes(), ref.tobytes())

def test_bad_image_raise_or_skip(src, tmp_path):
    import shutil
    root = tmp_path / 'nih'; shutil.copytree(src.root, root)
    s = load_nih(root)
    victim = root / s.frame['image'].iloc[4]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ImageReadError, match=victim.name): build_cache(s.frame, root, SIZE, tmp_path / 'b', workers=0, progress=False)
    with pytest.warns(UserWarning, match='1 image\\(s\\) could not be read') as w:
        imgs = build_cache(s.frame, root, SIZE, tmp_path / 'b2', workers=0, progress=False, on_error='skip')
    assert victim.name in str(w[0].message)
    fct.test_eq(int(np.asarray(imgs[4]).max()), 0)
    h = check_image_cache(tmp_path / 'b2')
    fct.test_eq(list(h['bad']), ['4'])
    cf = cache_frame(s.frame, imgs)
    fct.test_eq((len(cf), 4 in cf['image'].tolist(), s.frame['image'].iloc[4] in cf['file'].tolist()), (len(s) - 1, False, False))
    fct.test_eq(len(cache_frame(s.frame, imgs, drop_bad=False)), len(s))
    with pytest.warns(UserWarning): c = s.cache(SIZE, out=tmp_path / 'b3', workers=0, progress=False, on_error='skip')
    fct.test_eq(len(c), len(s) - 1)
    fct.test_eq(c.dls(bs=2, aug=False, stats=(0.5, 0.25)).one_batch()[0].shape, (2, 1, SIZE, SIZE))

def test_concurrent_builders_wait(src, ref, tmp_path, helper, monkeypatch):
    "Two builders of the same cache at once: one builds, the other waits and reuses it."
    log = tmp_path / 'log.txt'
    monkeypatch.setenv('CXR_TEST_LOG', str(log))
    out, res, errs = tmp_path / 't', [None, None], []
    def run(i):
        try: res[i] = np.asarray(_build(src, out, reader=helper.reader)).copy()
        except Exception as e: errs.append(e)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert not errs, errs
    fct.test_eq(len(_log(log)), len(src))                                       # built once
    for r in res: fct.test_eq(r.tobytes(), ref.tobytes())

def test_default_location(src, tmp_path, monkeypatch):
    monkeypatch.setenv('CXR_NOISY_LT_CACHE', str(tmp_path / 'cache'))
    a = build_cache(src.frame, src.root, SIZE, workers=0, progress=False)
    assert Path(a.filename).parent == tmp_path / 'cache'
    c = src.cache(SIZE, workers=0, progress=False)
    assert Path(c.images.filename).parent == tmp_path / 'cache' and c.name == 'nih'
    assert c.info['cache'] == str(c.images.filename)

def test_bad_arguments(src, tmp_path):
    f = src.frame
    for kw, msg in [(dict(size=0), 'size=0'), (dict(size=24.0), 'size=24.0'), (dict(chunk=0), 'chunk=0'),
                    (dict(on_error='ignore'), 'on_error'), (dict(on_bad_cache='keep'), 'on_bad_cache')]:
        with pytest.raises(ValueError, match=msg):
            build_cache(f, src.root, **(dict(size=SIZE, out=tmp_path / 'x', progress=False) | kw))
    with pytest.raises(ValueError, match='empty'): build_cache(f.iloc[:0], src.root, SIZE, tmp_path / 'x')
    with pytest.raises(ValueError, match='holds numbers'): build_cache(f.assign(image=range(len(f))), src.root, SIZE, tmp_path / 'x')
    with pytest.raises(KeyError, match="'image'"): build_cache(f.drop(columns='image'), src.root, SIZE, tmp_path / 'x')
    with pytest.raises(ValueError, match='memory-mapped'): cache_frame(f, np.zeros((len(f), 4, 4), np.uint8))
    assert not (tmp_path / 'x.npy').exists()
