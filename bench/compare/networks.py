# SPDX-License-Identifier: MIT
"""PyTorch's side of bench/compare/networks.sh (bench/NETWORKS.md): the networks of
bench/networks.cpp, built as PyTorch code builds them, float32, one thread.

    networks.py --case resnet20-grad|resnet20-hvp|darts-grad|darts-step [--warmup N] [--timed N] [--seed S]
                [--batch B] [--device cpu|cuda]   (B: 128 for ResNet-20, 64 for DARTS unless given)

--device cuda runs the same cases on the GPU (against bench/gpu/networks_gpu.cu on the same
device; bench/gpu/device_checks.sh runs both): cuDNN with its autotuner on
(torch.backends.cudnn.benchmark, PyTorch's fastest setting for fixed shapes), each repetition
followed by torch.cuda.synchronize(), and the GPU memory PyTorch's allocator held at its peak
during the timed repetitions (torch.cuda.max_memory_allocated) besides the process's.

resnet20-grad  ResNet-20 as in the CIFAR code (akamaster/pytorch_resnet_cifar10; option A
               shortcuts F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))), 16
               channels, on 1x28x28 images, 10 classes, batch 128: loss, then
               torch.autograd.grad(loss, params).
resnet20-hvp   loss, g = torch.autograd.grad(loss, params, create_graph=True), then
               torch.autograd.grad(<g, v>, params) along a fixed random v.
darts-grad     the DARTS supernet of DARTS's cnn/model_search.py and operations.py (5 cells, C = 8,
               4 nodes, stem multiplier 3, 10 classes), batch 64: loss, then
               torch.autograd.grad(loss, weights) at a given alpha (not requiring grad).
darts-step     one iteration of DARTS's train_search.py with the second-order architect:
               architect.step(unrolled=True) = _backward_step_unrolled (the virtual step
               w' = w - eta (mu m + grad_w L_train + wd w) with the weights' momentum buffer,
               grad_alpha L_val(w', alpha) and grad_w' L_val, the central differences
               grad_alpha L_train(w +- R v, alpha), R = 0.01/|v|, the hypergradient) and Adam's
               step on alpha; then the weights' step (forward, loss.backward(), SGD with momentum
               0.9 and weight decay 3e-4). As bilevel's methods::darts, without DARTS's gradient
               clipping; the unrolled model is torch.func.functional_call on the unrolled
               tensors instead of DARTS's model.new() + load_state_dict (no network is built
               inside the timed step).

Memory from /proc/self/status as bench/networks.cpp: VmRSS after set-up, VmHWM reset through
/proc/self/clear_refs before the warm-up and again before the timed repetitions. Prints one
JSON line.
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call


# ---------------------------------------------------------------------------------------------
# ResNet-20 (He et al. 2016, CIFAR), option A.
class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or in_planes != planes) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + skip)


class ResNet(nn.Module):
    def __init__(self, depth=20, width=16, in_channels=1, classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, in_planes = [], width
        for stage in range(3):
            planes = width << stage
            for b in range(n):
                layers.append(BasicBlock(in_planes, planes, 2 if stage > 0 and b == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(in_planes, classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


# ---------------------------------------------------------------------------------------------
# DARTS (Liu et al. 2019): cnn/operations.py and cnn/model_search.py, alpha passed to forward.
PRIMITIVES = ['none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3', 'sep_conv_5x5',
              'dil_conv_3x3', 'dil_conv_5x5']


class ReLUConvBN(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(C_in, C_out, kernel_size, stride=stride,
                                                                  padding=padding, bias=False),
                                nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, 1, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.)
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


class FactorizedReduce(nn.Module):
    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        assert C_out % 2 == 0
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


OPS = {
    'none': lambda C, stride, affine: Zero(stride),
    'avg_pool_3x3': lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    'max_pool_3x3': lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    'skip_connect': lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    'sep_conv_3x3': lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    'sep_conv_5x5': lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    'dil_conv_3x3': lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    'dil_conv_5x5': lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
}


class MixedOp(nn.Module):
    def __init__(self, C, stride):
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in PRIMITIVES:
            op = OPS[primitive](C, stride, False)
            if 'pool' in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class Cell(nn.Module):
    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList()
        for i in range(self._steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(C, stride))

    def forward(self, s0, s1, weights):
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        offset = 0
        for i in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(nn.Module):
    """model_search.Network; the architecture (alphas_normal, alphas_reduce) is forward's argument."""

    def __init__(self, C=8, num_classes=10, layers=5, steps=4, multiplier=4, stem_multiplier=3, in_channels=1):
        super().__init__()
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            if i in [layers // 3, 2 * layers // 3]:
                C_curr *= 2
                reduction = True
            else:
                reduction = False
            cell = Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells += [cell]
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self.edges = sum(1 for i in range(steps) for n in range(2 + i))

    def forward(self, input, alphas_normal, alphas_reduce):
        s0 = s1 = self.stem(input)
        for cell in self.cells:
            weights = F.softmax(alphas_reduce if cell.reduction else alphas_normal, dim=-1)
            s0, s1 = s1, cell(s0, s1, weights)
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))


# ---------------------------------------------------------------------------------------------
def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024.0
    return -1.0


def reset_rss_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True, choices=["resnet20-grad", "resnet20-hvp", "darts-grad", "darts-step"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--timed", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    o = ap.parse_args()
    dev = torch.device(o.device)
    on_gpu = dev.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(1)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    torch.manual_seed(o.seed)
    gen = torch.Generator().manual_seed(o.seed + 100)
    crit = nn.CrossEntropyLoss()

    def images(n):  # drawn on the CPU from the seeded generator, then moved
        return (torch.rand(n, 1, 28, 28, generator=gen).to(dev),
                torch.randint(0, 10, (n,), generator=gen).to(dev))

    arch_params = 0
    norm = [0.0]
    if o.case.startswith("resnet20"):
        batch = o.batch or 128
        model = ResNet().train().to(dev)
        params = [p for p in model.parameters()]
        x, y = images(batch)
        if o.case == "resnet20-grad":
            contents = "loss; torch.autograd.grad(loss, params)"

            def work():
                g = torch.autograd.grad(crit(model(x), y), params)
                norm[0] = g
        else:
            v = [torch.randn(p.shape, generator=gen).to(dev) for p in params]
            contents = ("loss; g = torch.autograd.grad(loss, params, create_graph=True); "
                        "torch.autograd.grad(<g, v>, params)")

            def work():
                g = torch.autograd.grad(crit(model(x), y), params, create_graph=True)
                gv = sum((gi * vi).sum() for gi, vi in zip(g, v))
                hv = torch.autograd.grad(gv, params)
                norm[0] = hv
    else:
        batch = o.batch or 64
        model = Network().train().to(dev)
        params = [p for p in model.parameters()]
        names = [n for n, _ in model.named_parameters()]
        k = len(PRIMITIVES)
        alphas_normal = (1e-3 * torch.randn(model.edges, k, generator=gen)).to(dev).requires_grad_(o.case == "darts-step")
        alphas_reduce = (1e-3 * torch.randn(model.edges, k, generator=gen)).to(dev).requires_grad_(o.case == "darts-step")
        arch_params = alphas_normal.numel() + alphas_reduce.numel()
        if o.case == "darts-grad":
            x, y = images(batch)
            contents = "loss at alpha (no grad); torch.autograd.grad(loss, weights)"

            def work():
                g = torch.autograd.grad(crit(model(x, alphas_normal, alphas_reduce), y), params)
                norm[0] = g
        else:
            xt, yt = images(batch)
            xv, yv = images(batch)
            eta, mu, wd = 0.025, 0.9, 3e-4
            w_opt = torch.optim.SGD(params, lr=eta, momentum=mu, weight_decay=wd)
            arch = [alphas_normal, alphas_reduce]
            a_opt = torch.optim.Adam(arch, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
            contents = ("architect.step(unrolled=True): virtual step (momentum, weight decay), validation "
                        "gradient at w' for alpha and w', central differences of grad_alpha L_train at "
                        "w +- R v, hypergradient, Adam; then the weights' step (forward, backward, SGD)")

            def work():
                # architect.step -> _backward_step_unrolled
                a_opt.zero_grad()
                loss = crit(model(xt, *arch), yt)  # _compute_unrolled_model
                dtheta = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    unrolled = []
                    for p, g in zip(params, dtheta):
                        buf = w_opt.state[p].get("momentum_buffer") if p in w_opt.state else None
                        moment = buf * mu if buf is not None else torch.zeros_like(p)
                        unrolled.append(p - eta * (moment + g + wd * p))
                unrolled = [u.requires_grad_() for u in unrolled]
                unrolled_loss = crit(functional_call(model, dict(zip(names, unrolled)), (xv, *arch)), yv)
                grads = torch.autograd.grad(unrolled_loss, arch + unrolled)
                dalpha, vector = grads[:2], grads[2:]
                # _hessian_vector_product(vector, input_train, target_train)
                R = 0.01 / torch.cat([v.reshape(-1) for v in vector]).norm()
                with torch.no_grad():
                    for p, v in zip(params, vector):
                        p.add_(v, alpha=float(R))
                grads_p = torch.autograd.grad(crit(model(xt, *arch), yt), arch)
                with torch.no_grad():
                    for p, v in zip(params, vector):
                        p.sub_(v, alpha=2 * float(R))
                grads_n = torch.autograd.grad(crit(model(xt, *arch), yt), arch)
                with torch.no_grad():
                    for p, v in zip(params, vector):
                        p.add_(v, alpha=float(R))
                implicit = [(a - b).div_(2 * R) for a, b in zip(grads_p, grads_n)]
                for a, g, ig in zip(arch, dalpha, implicit):
                    a.grad = g - eta * ig
                a_opt.step()
                # the weights' step (train_search.train)
                w_opt.zero_grad()
                loss = crit(model(xt, *arch), yt)
                loss.backward()
                w_opt.step()
                norm[0] = None

    n_params = sum(p.numel() for p in params)
    rss_setup, peak_setup = status_mb("VmRSS"), status_mb("VmHWM")
    reset_rss_peak()
    for _ in range(o.warmup):
        work()
        sync()
    peak_warmup = status_mb("VmHWM") if o.warmup > 0 else rss_setup
    rss_before_timed = status_mb("VmRSS")
    reset_rss_peak()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    ms = []
    for _ in range(o.timed):
        t0 = time.perf_counter()
        work()
        sync()
        ms.append((time.perf_counter() - t0) * 1e3)
    peak_timed = status_mb("VmHWM")
    check = 0.0 if norm[0] is None else float(torch.sqrt(sum((t * t).sum() for t in norm[0])))
    ms = np.array(ms)
    print(json.dumps({
        "implementation": "pytorch", "case": o.case, "batch": batch, "params": n_params, "arch_params": arch_params,
        "warmup": o.warmup, "timed": o.timed, "median_ms": round(float(np.median(ms)), 3),
        "p10_ms": round(float(np.percentile(ms, 10)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "min_ms": round(float(ms.min()), 3), "max_ms": round(float(ms.max()), 3),
        "rss_setup_mb": round(rss_setup, 1), "peak_setup_mb": round(peak_setup, 1),
        "peak_warmup_mb": round(peak_warmup, 1), "rss_before_timed_mb": round(rss_before_timed, 1),
        "peak_timed_mb": round(peak_timed, 1), "growth_timed_mb": round(peak_timed - rss_before_timed, 1),
        "growth_mb": round(max(peak_warmup, peak_timed) - rss_setup, 1),
        "peak_mb": round(max(peak_setup, peak_warmup, peak_timed), 1), "check_norm": check,
        "contents": contents, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_gpu else None}))


if __name__ == "__main__":
    main()
