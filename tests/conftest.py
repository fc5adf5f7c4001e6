import os

# Serial numba and torch: the suite runs on 2 cores beside other work.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
try:
    import torch
    torch.set_num_threads(1)
except ImportError:
    pass
