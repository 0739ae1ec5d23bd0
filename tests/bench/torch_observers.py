"""torch_observers.py - the peer for the benchmark: PyTorch's MinMaxObserver or
HistogramObserver (2048 bins) on every tensor of a qcal dump, fed batches of 32 samples
as a calibration loop feeds them, then each observer's qparams.

    /usr/bin/python3 tests/bench/torch_observers.py minmax|histogram DUMP

Uses Debian's python3-torch and python3-h5py (tests/bench/run.sh installs them). Prints
nothing on stdout; timing is done by the caller (bench_read time), as for qcal.
"""
import sys

import h5py
import torch
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

BATCH = 32


def observer(kind):
    if kind == "minmax":
        return MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    return HistogramObserver(bins=2048, dtype=torch.quint8, qscheme=torch.per_tensor_affine)


def main():
    kind, path = sys.argv[1], sys.argv[2]
    with h5py.File(path, "r") as f:
        group = f["activations"]
        for name in sorted(group):
            ds = group[name]
            obs = observer(kind)
            for start in range(0, ds.shape[0], BATCH):
                obs(torch.from_numpy(ds[start:start + BATCH].astype("float32", copy=False)))
            obs.calculate_qparams()
    return 0


if __name__ == "__main__":
    sys.exit(main())
