__version__ = "0.1.0"

import warnings
# timm and fastai call `torch.jit.script` at import time, which this torch deprecates with a FutureWarning
warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
