"`keep_cpu_memory`: a CPU training step reuses freed memory instead of faulting it in again (Linux, glibc)."
import json, os, platform, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'),
                                reason="glibc's allocator only")

CHILD = r'''
import json, resource, warnings
warnings.filterwarnings('ignore')
import torch
torch.set_num_threads(1)
from fastai.callback.core import Callback
from cxr_noisy_lt.data import toy_cxr, cxr_dls
from cxr_noisy_lt.labels import NIH14
from cxr_noisy_lt.learner import cxr_learner, keep_cpu_memory
from fastai.torch_core import set_seed
set_seed(0, reproducible=True)
frame, images = toy_cxr(n=400, size=64, seed=0)
dls = cxr_dls(frame, NIH14[:4], images, bs=64, seed=0, aug=False)
learn = cxr_learner(dls, 'narrow_resnet10', metrics=[])
faults = []
class F(Callback):
    def before_train(self): self.f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def after_train(self): faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.f)
learn.add_cb(F())
with learn.no_bar(), learn.no_logging(): learn.fit(3, 2e-3)
print(json.dumps(dict(kept=keep_cpu_memory(), faults=faults[-1], loss=float(learn.recorder.losses[-1]))))
'''

def train(**env):
    r = subprocess.run([sys.executable, '-c', CHILD], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', **env))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])

@pytest.mark.slow
def test_training_reuses_freed_memory():
    "The same training with glibc's defaults faults memory in on every step; with the setting, hardly at all; same loss."
    env = {k: v for k, v in os.environ.items() if k.startswith('MALLOC_') or k == 'GLIBC_TUNABLES'}
    if env: pytest.skip(f"the environment sets the allocator already: {sorted(env)}")
    off, on = train(CXR_KEEP_CPU_MEMORY='0'), train()
    assert not off['kept'] and on['kept']
    assert on['faults'] * 10 < off['faults'], (on, off)          # a steady epoch: a tenth of the faults at most
    assert on['loss'] == off['loss']                              # where memory comes from changes no value

@pytest.mark.slow
def test_environment_settings_win():
    "A process whose environment sets glibc's allocator keeps those settings."
    assert not train(MALLOC_TRIM_THRESHOLD_='131072')['kept']
    assert not train(GLIBC_TUNABLES='glibc.malloc.mmap_threshold=131072')['kept']
