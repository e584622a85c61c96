# SPDX-License-Identifier: MIT
"""PyTorch's side of gemm_rates.sh: torch.mm on the same shapes as gemm_rates.cpp, 1 thread."""
import statistics
import time

import torch

torch.set_num_threads(1)
for width in (256, 2048):
    x, w, g = torch.randn(128, 784), torch.randn(width, 784), torch.randn(128, width)

    def median_ms(f):
        t = []
        for _ in range(200):
            a = time.perf_counter()
            f()
            t.append((time.perf_counter() - a) * 1e3)
        return statistics.median(t)

    forward = median_ms(lambda: torch.mm(x, w.t()))
    weight_gradient = median_ms(lambda: torch.mm(g.t(), x))
    flop = 2 * 128 * 784 * width
    print(f"torch    W={width:<4d} forward {forward:.3f} ms ({flop / forward / 1e6:.1f} GFLOP/s)  "
          f"weight gradient {weight_gradient:.3f} ms ({flop / weight_gradient / 1e6:.1f} GFLOP/s)")
