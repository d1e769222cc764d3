"Shared timing for the benchmark scripts: the median wall time of a training step, measured in a fastai fit."
import time
from fastai.callback.core import Callback, CancelFitException

class StepTimer(Callback):
    "Median wall time from before_batch to after_batch over `steps` training steps after `warmup`; then raises `stop`."
    order = -100
    def __init__(self, steps, warmup, stop=CancelFitException): self.steps, self.warmup, self.stop = steps, warmup, stop
    def before_fit(self): self.times = []
    def before_batch(self):
        if self.training: self.t = time.perf_counter()
    def after_batch(self):
        if not self.training: return
        self.times.append(time.perf_counter() - self.t)
        if len(self.times) >= self.steps + self.warmup: raise self.stop
