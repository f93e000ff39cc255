import os

import torch

# Each pytest-xdist worker is a process of its own: with torch's default of
# one thread per core, two workers on two cores spin against each other and
# small fits run ten times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
