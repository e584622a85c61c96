#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The Python side of the comparison (bench/compare/run.sh): Meta-Weight-Net on Fashion-MNIST
with 40% symmetric label noise, one outer step timed the way bench/compare/mwn_step.cpp times
bilevel's solver.iterate().

usage: peers.py --impl torch|higher|torchopt|betty [--mode lookahead|cg|neumann|sama]
                --problem DIR [--data DIR] [--threads T] [--width W] [--seed S]
                [--warmup N] [--timed N] [--train-steps N] [--iterations K] [--neumann-step A]
                [--sama-alpha R]

The problem is the one bilevel builds, read from `mwn_step --export DIR` (same training and
validation rows, same noisy labels, same initial parameters of the classifier and of V):
classifier MLP 784-W-128-10 (ReLU), batches of 128 (training: a seeded permutation per epoch,
last short batch dropped; validation: drawn with replacement), classifier SGD lr 0.1,
momentum 0.9, weight decay 5e-4 (no Nesterov), V 1-100-1 (ReLU, sigmoid) on each sample's
detached loss, Adam lr 1e-3, weight decay 1e-4. Float32 on the CPU, or with --device cuda
(torch and higher only) on the GPU: the model, V and the data sets live on the device, each
step's batch is gathered there, and the clock stops after torch.cuda.synchronize().

--mode lookahead (one outer step = V's step along the hypergradient of the validation loss
through one virtual classifier step, which includes the momentum buffer and weight decay,
then the classifier's real step with the new weights; the Meta-Weight-Net official order):
  torch     plain PyTorch: autograd.grad(create_graph=True) + torch.func.functional_call
  higher    higher.innerloop_ctx with the real SGD optimizer (its state copied)
  torchopt  TorchOpt's functional API: torchopt.sgd update (inplace=False) + apply_updates
  betty     Betty Problem/Engine, type "darts", unroll_steps=1 (its learning_to_reweight
            example): the classifier steps first, then V along Betty's finite-difference
            approximation of the same derivative (2 extra forward passes instead of an HVP)
--mode cg / neumann (classifier step first, then V along the implicit hypergradient at the
new parameters, K iterations, no damping):
  torchopt  torchopt.diff.implicit.custom_root with linear_solve.solve_cg (tolerance 0, so
            exactly K iterations) or solve_inv(ns=True)
  betty     Config(type="cg", cg_iterations=K) or type="neumann" (neumann_iterations=K)
--mode sama (Betty only; bench/NEWER_STRATEGIES.md): Config(type="sama"), otherwise as the
  modes above (classifier step first, unroll_steps=1): V along SAMA's hypergradient, the
  inverse Hessian replaced by the identity (Betty's precondition for SGD) and the mixed
  product by central differences of V's gradient of the training loss at theta +- eps v,
  eps = R/||v|| on the classifier's last batch; R = sama_adam_alpha, Betty's default 1.0
  unless --sama-alpha is given.

Prints one JSON line.
"""
import argparse
import gzip
import json
import os
import resource
import sys
import time

import numpy as np


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", required=True, choices=["torch", "higher", "torchopt", "betty"])
    p.add_argument("--mode", default="lookahead", choices=["lookahead", "cg", "neumann", "sama"])
    p.add_argument("--problem", required=True, help="directory written by mwn_step --export")
    p.add_argument("--data", default=os.environ.get("BILEVEL_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--timed", type=int, default=200)
    p.add_argument("--train-steps", type=int, default=0)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--neumann-step", type=float, default=0.01)
    p.add_argument("--sama-alpha", type=float, default=None, help="Betty's sama_adam_alpha (default: Betty's, 1.0)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = p.parse_args()
    if a.device == "cuda" and a.impl not in ("torch", "higher"):
        p.error("--device cuda: only torch and higher are set up for the GPU here")
    if a.mode != "lookahead" and a.impl not in ("torchopt", "betty"):
        p.error(f"--mode {a.mode}: only torchopt and betty offer implicit hypergradients")
    if a.mode == "sama" and a.impl != "betty":
        p.error("--mode sama: Betty only")
    return a


ARGS = parse()
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # before torch loads its runtimes
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call  # noqa: E402

torch.set_num_threads(ARGS.threads)
torch.set_num_interop_threads(1)
torch.manual_seed(ARGS.seed)

DEVICE = torch.device(ARGS.device)
LR, MOMENTUM, WD, META_LR, META_WD, BATCH, VAL_BATCH, HIDDEN = 0.1, 0.9, 5e-4, 1e-3, 1e-4, 128, 128, 100


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_rss_peak():  # so that VmHWM sees the training alone (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def status_mb(field):  # VmRSS / VmHWM of /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return -1.0


# ---------------------------------------------------------------- data and the shared problem
def idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_file(name):
    for candidate in (name + ".gz", name):
        path = os.path.join(ARGS.data, candidate)
        if os.path.exists(path):
            return path
    sys.exit(f"peers.py: {name}(.gz) not found in {ARGS.data}")


def images(name):  # as bilevel: float(value / 255.0)
    x = idx(idx_file(name))
    return torch.from_numpy((x.reshape(x.shape[0], -1).astype(np.float64) / 255.0).astype(np.float32))


def load_problem():
    d = ARGS.problem
    meta = json.load(open(os.path.join(d, "problem.json")))
    widths = meta["widths"]
    train_rows = np.fromfile(os.path.join(d, "train_rows.i64"), dtype=np.int64)
    train_labels = np.fromfile(os.path.join(d, "train_labels.i64"), dtype=np.int64)
    val_rows = np.fromfile(os.path.join(d, "val_rows.i64"), dtype=np.int64)
    theta0 = np.fromfile(os.path.join(d, "theta0.f32"), dtype=np.float32)
    phi0 = np.fromfile(os.path.join(d, "phi0.f32"), dtype=np.float32)
    x_all = images("train-images-idx3-ubyte")
    y_all = torch.from_numpy(idx(idx_file("train-labels-idx1-ubyte")).astype(np.int64))
    x_test = images("t10k-images-idx3-ubyte")
    y_test = torch.from_numpy(idx(idx_file("t10k-labels-idx1-ubyte")).astype(np.int64))
    tr, va = torch.from_numpy(train_rows), torch.from_numpy(val_rows)
    problem = dict(widths=widths, x=x_all[tr].contiguous(), y=torch.from_numpy(train_labels),
                   xv=x_all[va].contiguous(), yv=y_all[va].contiguous(), x_test=x_test, y_test=y_test,
                   theta0=theta0, phi0=phi0)
    del x_all  # keep what bilevel's program keeps: training, validation and test sets
    return problem


def classifier(widths, theta0):
    layers, off = [], 0
    for i in range(len(widths) - 1):
        fan_in, fan_out = widths[i], widths[i + 1]
        lin = nn.Linear(fan_in, fan_out)
        with torch.no_grad():  # bilevel: W is fan_in x fan_out row-major, then b
            w = theta0[off:off + fan_in * fan_out].reshape(fan_in, fan_out)
            off += fan_in * fan_out
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(theta0[off:off + fan_out]))
            off += fan_out
        layers.append(lin)
        if i + 2 < len(widths):
            layers.append(nn.ReLU())
    assert off == theta0.size, "theta0 does not match the widths"
    return nn.Sequential(*layers)


def weighting_net(phi0):
    v = nn.Sequential(nn.Linear(1, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1), nn.Sigmoid())
    h = HIDDEN
    with torch.no_grad():  # bilevel: w1[H], b1[H], w2[H], b2
        v[0].weight.copy_(torch.from_numpy(phi0[0:h].copy()).reshape(h, 1))
        v[0].bias.copy_(torch.from_numpy(phi0[h:2 * h].copy()))
        v[2].weight.copy_(torch.from_numpy(phi0[2 * h:3 * h].copy()).reshape(1, h))
        v[2].bias.copy_(torch.from_numpy(phi0[3 * h:3 * h + 1].copy()))
    return v


class TrainBatches:
    """A seeded permutation per epoch, full batches only (as bilevel's sampler)."""

    def __init__(self, x, y, seed):
        self.x, self.y, self.gen = x, y, torch.Generator().manual_seed(seed)

    def __iter__(self):  # one epoch (Betty re-creates the iterator at StopIteration)
        order = torch.randperm(self.x.shape[0], generator=self.gen)
        for s in range(0, self.x.shape[0] - BATCH + 1, BATCH):
            rows = order[s:s + BATCH].to(self.x.device)
            yield self.x[rows], self.y[rows]

    def forever(self):
        while True:
            yield from iter(self)


class ValBatches:
    """Validation batches drawn with replacement, endless."""

    def __init__(self, x, y, seed):
        self.x, self.y, self.gen = x, y, torch.Generator().manual_seed(seed)

    def __iter__(self):
        while True:
            rows = torch.randint(0, self.x.shape[0], (VAL_BATCH,), generator=self.gen).to(self.x.device)
            yield self.x[rows], self.y[rows]


def weighted_loss(logits, y, vnet, vparams=None):
    """(1/B) sum_i V(l_i) l_i, V reading the detached loss; vparams: V's parameters as a dict
    for functional_call, else V's own."""
    cost = F.cross_entropy(logits, y, reduction="none")
    d = cost.detach().unsqueeze(1)
    w = (vnet(d) if vparams is None else functional_call(vnet, vparams, (d,))).squeeze(1)
    return (w * cost).mean()


@torch.no_grad()
def accuracy(model, x, y):
    correct = 0
    for s in range(0, x.shape[0], 1000):
        correct += (model(x[s:s + 1000].to(DEVICE)).argmax(1).cpu() == y[s:s + 1000]).sum().item()
    return 100.0 * correct / x.shape[0]


# ---------------------------------------------------------------- the implementations
def make_torch(p, model, vnet, train, val):
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    meta_opt = torch.optim.Adam(vnet.parameters(), lr=META_LR, weight_decay=META_WD)
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    vparams = list(vnet.parameters())

    def step():
        x, y = next(train)
        # V's step: one virtual SGD step (momentum buffer and weight decay included), kept in the graph.
        loss = weighted_loss(model(x), y, vnet)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        virtual = {}
        for name, q, g in zip(names, params, grads):
            d = g + WD * q
            buf = opt.state[q].get("momentum_buffer") if q in opt.state else None
            if buf is not None:
                d = MOMENTUM * buf + d
            virtual[name] = q - LR * d
        xv, yv = next(val)
        meta_loss = F.cross_entropy(functional_call(model, virtual, (xv,)), yv)
        for q, g in zip(vparams, torch.autograd.grad(meta_loss, vparams)):
            q.grad = g
        meta_opt.step()
        # The classifier's real step with the new weights.
        loss = weighted_loss(model(x), y, vnet)
        opt.zero_grad(set_to_none=True)
        for q, g in zip(params, torch.autograd.grad(loss, params)):
            q.grad = g
        opt.step()

    return step


def make_higher(p, model, vnet, train, val):
    import higher

    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    meta_opt = torch.optim.Adam(vnet.parameters(), lr=META_LR, weight_decay=META_WD)
    params, vparams = list(model.parameters()), list(vnet.parameters())

    def step():
        x, y = next(train)
        with higher.innerloop_ctx(model, opt, copy_initial_weights=True) as (fmodel, diffopt):
            diffopt.step(weighted_loss(fmodel(x), y, vnet))
            xv, yv = next(val)
            meta_loss = F.cross_entropy(fmodel(xv), yv)
            vgrads = torch.autograd.grad(meta_loss, vparams)
        for q, g in zip(vparams, vgrads):
            q.grad = g
        meta_opt.step()
        loss = weighted_loss(model(x), y, vnet)
        for q, g in zip(params, torch.autograd.grad(loss, params)):
            q.grad = g
        opt.step()

    return step


def make_torchopt(p, model, vnet, train, val):
    import torchopt

    names = [n for n, _ in model.named_parameters()]
    vnames = [n for n, _ in vnet.named_parameters()]
    params = tuple(q.detach().clone().requires_grad_() for q in model.parameters())
    vparams = tuple(vnet.parameters())
    sgd = torchopt.sgd(lr=LR, momentum=MOMENTUM, weight_decay=WD)
    state = [sgd.init(params)]
    meta_opt = torch.optim.Adam(vparams, lr=META_LR, weight_decay=META_WD)

    def real_step(x, y):  # the classifier's step, in place, outside any graph
        loss = weighted_loss(functional_call(model, dict(zip(names, params)), (x,)), y, vnet)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            updates, state[0] = sgd.update(grads, state[0], params=params, inplace=True)
            torchopt.apply_updates(params, updates, inplace=True)

    def sync():  # the module evaluates the test accuracy
        with torch.no_grad():
            for q, r in zip(model.parameters(), params):
                q.copy_(r)

    if ARGS.mode == "lookahead":
        def step():
            x, y = next(train)
            loss = weighted_loss(functional_call(model, dict(zip(names, params)), (x,)), y, vnet)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            updates, _ = sgd.update(grads, state[0], params=params, inplace=False)
            virtual = torchopt.apply_updates(params, updates, inplace=False)
            xv, yv = next(val)
            meta_loss = F.cross_entropy(functional_call(model, dict(zip(names, virtual)), (xv,)), yv)
            for q, g in zip(vparams, torch.autograd.grad(meta_loss, vparams)):
                q.grad = g
            meta_opt.step()
            real_step(x, y)

        return step, sync

    # Implicit: the classifier's real step is the "solver"; V's hypergradient comes from the
    # optimality condition grad_theta L_train(theta, phi) = 0 at the new parameters.
    def train_loss(theta, phi, x, y):
        logits = functional_call(model, dict(zip(names, theta)), (x,))
        return weighted_loss(logits, y, vnet, dict(zip(vnames, phi)))

    def optimality(theta, phi, x, y):
        return torch.func.grad(train_loss)(theta, phi, x, y)

    if ARGS.mode == "cg":
        solve = torchopt.linear_solve.solve_cg(maxiter=ARGS.iterations, rtol=0.0, atol=0.0)
    else:
        solve = torchopt.linear_solve.solve_inv(ns=True, maxiter=ARGS.iterations, alpha=ARGS.neumann_step)

    @torchopt.diff.implicit.custom_root(optimality, argnums=1, solve=solve)
    def inner(theta, phi, x, y):
        with torch.enable_grad():
            real_step(x, y)
        return tuple(q.detach().clone() for q in params)

    def step():
        x, y = next(train)
        theta = inner(params, vparams, x, y)
        xv, yv = next(val)
        meta_loss = F.cross_entropy(functional_call(model, dict(zip(names, theta)), (xv,)), yv)
        for q, g in zip(vparams, torch.autograd.grad(meta_loss, vparams)):
            q.grad = g
        meta_opt.step()

    return step, sync


def make_betty(p, model, vnet, train_iterable, val_iterable, optimizer=None, scheduler=None, meta_optimizer=None):
    """Betty's engine for the two problems; the optimizers default to this comparison's (the
    label-noise comparison, label_noise_betty.py, passes its own and a learning-rate schedule)."""
    from betty.configs import Config, EngineConfig
    from betty.engine import Engine
    from betty.problems import ImplicitProblem

    class Inner(ImplicitProblem):
        def training_step(self, batch):
            x, y = batch
            cost = F.cross_entropy(self.forward(x), y, reduction="none")
            w = self.outer(cost.detach().unsqueeze(1)).squeeze(1)
            return (w * cost).mean()

    class Outer(ImplicitProblem):
        def training_step(self, batch):
            x, y = batch
            return F.cross_entropy(self.inner(x), y)

    kind = {"lookahead": "darts", "cg": "cg", "neumann": "neumann", "sama": "sama"}[ARGS.mode]
    sama = {} if ARGS.sama_alpha is None else {"sama_adam_alpha": ARGS.sama_alpha}
    inner_config = Config(type=kind, unroll_steps=1, cg_iterations=ARGS.iterations,
                          neumann_iterations=ARGS.iterations, neumann_alpha=ARGS.neumann_step, **sama)
    outer_config = Config(type="darts", retain_graph=True)
    inner = Inner(name="inner", config=inner_config, module=model,
                  optimizer=optimizer or torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD),
                  scheduler=scheduler, train_data_loader=train_iterable)
    outer = Outer(name="outer", config=outer_config, module=vnet,
                  optimizer=meta_optimizer or torch.optim.Adam(vnet.parameters(), lr=META_LR, weight_decay=META_WD),
                  train_data_loader=val_iterable)
    engine = Engine(config=EngineConfig(train_iters=10**9, valid_step=10**9, strategy="cpu"), problems=[outer, inner],
                    dependencies={"l2u": {inner: [outer]}, "u2l": {outer: [inner]}})
    engine.train()

    def step():  # Engine.run's loop body, without its validation
        engine.global_step += 1
        engine.train_step()

    step.inner = inner  # Betty's problem, with the optimizer it steps (a patched copy of the one given)
    return step


# ---------------------------------------------------------------- timing
def main():
    import logging

    logging.disable(logging.WARNING)  # Betty's initialisation messages
    p = load_problem()
    assert p["widths"][1] == ARGS.width, f"the problem in {ARGS.problem} has widths {p['widths']}, not width {ARGS.width}"
    model = classifier(p["widths"], p["theta0"]).to(DEVICE)
    vnet = weighting_net(p["phi0"]).to(DEVICE)
    train = TrainBatches(p["x"].to(DEVICE), p["y"].to(DEVICE), ARGS.seed)
    val = ValBatches(p["xv"].to(DEVICE), p["yv"].to(DEVICE), ARGS.seed + 2)
    wait = torch.cuda.synchronize if DEVICE.type == "cuda" else (lambda: None)
    sync = None
    if ARGS.impl == "torch":
        step = make_torch(p, model, vnet, train.forever(), iter(val))
    elif ARGS.impl == "higher":
        step = make_higher(p, model, vnet, train.forever(), iter(val))
    elif ARGS.impl == "torchopt":
        step, sync = make_torchopt(p, model, vnet, train.forever(), iter(val))
    else:
        step = make_betty(p, model, vnet, train, val)
    loading_peak, baseline = rss_mb(), status_mb("VmRSS")
    reset_rss_peak()  # ru_maxrss follows VmHWM: keep the loading peak first
    total = max(ARGS.train_steps, ARGS.warmup + ARGS.timed)
    times = []
    for t in range(total):
        t0 = time.perf_counter()
        step()
        wait()
        t1 = time.perf_counter()
        if ARGS.warmup <= t < ARGS.warmup + ARGS.timed:
            times.append(1e3 * (t1 - t0))
    training_peak = status_mb("VmHWM")
    if sync:
        sync()
    acc = accuracy(model, p["x_test"], p["y_test"]) if ARGS.train_steps > 0 else None
    versions = {"torch": torch.__version__, "python": sys.version.split()[0]}
    try:
        import importlib.metadata as md

        versions[ARGS.impl] = md.version({"betty": "betty-ml"}.get(ARGS.impl, ARGS.impl)) if ARGS.impl != "torch" else torch.__version__
    except Exception:  # noqa: BLE001
        pass
    ms = np.array(times)
    print(json.dumps({
        "implementation": ARGS.impl, "mode": ARGS.mode, "threads": ARGS.threads,
        "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(), "width": ARGS.width, "seed": ARGS.seed,
        "warmup": ARGS.warmup, "timed": ARGS.timed, "median_ms": float(np.median(ms)),
        "p10_ms": float(np.percentile(ms, 10)), "p90_ms": float(np.percentile(ms, 90)), "mean_ms": float(ms.mean()),
        "peak_rss_mb": round(max(loading_peak, rss_mb()), 1), "rss_before_training_mb": round(baseline, 1),
        "training_peak_rss_mb": round(training_peak, 1),
        "train_steps": total if ARGS.train_steps > 0 else 0, "test_accuracy": acc,
        "iterations": ARGS.iterations if ARGS.mode in ("cg", "neumann") else 1, "versions": versions,
    }))


if __name__ == "__main__":
    main()
