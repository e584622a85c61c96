#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Betty's Meta-Weight-Net on the problem bilevel's example 02 trains, for a side-by-side
accuracy comparison: the same training rows and noisy labels, validation and test rows, and the
same starting parameters of the classifier and of the weighting net, written by

    build/examples/02_label_noise_fashion_mnist --export DIR [its data options] --seeds 1,2,3

(DIR/seed<N>/, see examples/support/experiment.hpp, export_problem). Betty trains with the
settings of that problem.json: classifier SGD (its lr, momentum, Nesterov, weight decay, ×0.1 at
2/3 and 5/6 of training when the schedule is multistep), the weighting net V 1-H-1 (ReLU,
sigmoid) on each sample's detached loss with Adam (meta_lr, meta_weight_decay), batches of
`batch` (a seeded permutation per epoch, full batches only), validation batches drawn with
replacement. Betty's schedule is its learning_to_reweight example's (Problem/Engine, type
"darts", unroll_steps=1): the classifier steps first, then V along Betty's finite-difference
approximation of the one-step hypergradient; bilevel's Meta-Weight-Net steps V first with the
exact look-ahead product. What stays different: the batch order (each side's own seeded
sampler) and that schedule.

--impl torch trains the same problem with a plain PyTorch loop instead, the official
Meta-Weight-Net code's: V steps first, through one virtual step of the classifier's SGD
(Nesterov momentum, weight decay and the current learning rate included) kept in the autograd
graph (torch.func.functional_call), then the classifier takes its real step with V's new
weights. That is bilevel's schedule and exact hypergradient, written independently; only the
batch order differs (the seeded samplers of peers.py, as for Betty).

usage: label_noise_betty.py --problem DIR/seed<N> [--impl betty|torch] [--data DIR] [--threads T] [--out CSV]

Prints the test accuracy and the mean weight V gives clean and corrupted training samples after
every epoch, then one JSON line; --out appends the epochs to a CSV
(implementation,seed,epoch,test_accuracy,weight_clean,weight_corrupted).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problem", required=True, help="a seed directory written by example 02 --export")
    p.add_argument("--data", default=os.environ.get("BILEVEL_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--impl", choices=("betty", "torch", "after-step"), default="betty",
                   help="Betty's engine (default), a plain PyTorch loop with the exact one-step look-ahead, or "
                        "after-step: Betty's hypergradient formula computed exactly (double backward)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="")
    return p.parse_args()


ARGS = parse()
meta = json.load(open(os.path.join(ARGS.problem, "problem.json")))
# peers.py holds the shared pieces (the IDX reader, the classifier and V built from bilevel's
# parameter layout, the samplers); it reads its settings from the command line and module
# constants when imported, so both are set here to this problem's.
sys.argv = [sys.argv[0], "--impl", "betty", "--problem", ARGS.problem, "--data", ARGS.data,
            "--threads", str(ARGS.threads), "--seed", str(int(meta["seed"]))]
sys.path.insert(0, here)
import peers  # noqa: E402

peers.BATCH, peers.VAL_BATCH, peers.HIDDEN = int(meta["batch"]), int(meta["validation_batch"]), int(meta["hidden"])
torch, F = peers.torch, peers.F


def load(name, dtype):
    return np.fromfile(os.path.join(ARGS.problem, name), dtype=dtype)


def lookahead_step(model, vnet, train, val, sgd, scheduler, adam):
    """One outer step of the official Meta-Weight-Net loop: V along the exact hypergradient of
    the validation loss through one virtual step of `sgd` (its current learning rate, momentum
    buffer, Nesterov and weight decay, as torch.optim.SGD would step), then the real step."""
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]
    params, vparams = list(model.parameters()), list(vnet.parameters())
    group = sgd.param_groups[0]
    momentum, wd, nesterov = group["momentum"], group["weight_decay"], group["nesterov"]

    def step():
        x, y = next(train)
        lr = group["lr"]  # the scheduler's current rate
        grads = torch.autograd.grad(peers.weighted_loss(model(x), y, vnet), params, create_graph=True)
        virtual = {}
        for name, q, g in zip(names, params, grads):
            d = g + wd * q
            buf = sgd.state[q].get("momentum_buffer") if q in sgd.state else None
            b = d if buf is None else momentum * buf + d  # torch.optim.SGD's buffer update
            virtual[name] = q - lr * (d + momentum * b if nesterov else b)
        xv, yv = next(val)
        meta_loss = F.cross_entropy(functional_call(model, virtual, (xv,)), yv)
        for q, g in zip(vparams, torch.autograd.grad(meta_loss, vparams)):
            q.grad = g
        adam.step()
        sgd.zero_grad(set_to_none=True)
        peers.weighted_loss(model(x), y, vnet).backward(inputs=params)
        sgd.step()
        scheduler.step()

    step.optimizer = sgd
    return step


def after_step(model, vnet, train, val, sgd, scheduler, adam):
    """Betty's schedule and formula without its finite difference: the classifier's real step
    on batch b first, then V along -d/dV [grad_theta L_train(theta', b) . grad_theta L_val(theta')]
    at the new theta' (the implicit hypergradient with the inverse Hessian taken as the
    identity), computed exactly by a double backward pass."""
    params, vparams = list(model.parameters()), list(vnet.parameters())

    def step():
        x, y = next(train)
        sgd.zero_grad(set_to_none=True)
        peers.weighted_loss(model(x), y, vnet).backward(inputs=params)
        sgd.step()
        scheduler.step()
        xv, yv = next(val)
        v = torch.autograd.grad(F.cross_entropy(model(xv), yv), params)
        g = torch.autograd.grad(peers.weighted_loss(model(x), y, vnet), params, create_graph=True)
        inner = sum((a * b.detach()).sum() for a, b in zip(g, v))
        for q, h in zip(vparams, torch.autograd.grad(inner, vparams)):
            q.grad = -h
        adam.step()

    step.optimizer = sgd
    return step


def main():
    import logging

    logging.disable(logging.WARNING)  # Betty's initialisation messages
    x_all = peers.images("train-images-idx3-ubyte")
    x_test_all = peers.images("t10k-images-idx3-ubyte")
    y_train_file = torch.from_numpy(peers.idx(peers.idx_file("train-labels-idx1-ubyte")).astype(np.int64))
    y_test_file = torch.from_numpy(peers.idx(peers.idx_file("t10k-labels-idx1-ubyte")).astype(np.int64))
    tr, va, te = (torch.from_numpy(load(n, np.int64)) for n in ("train_rows.i64", "val_rows.i64", "test_rows.i64"))
    x, y = x_all[tr].contiguous(), torch.from_numpy(load("train_labels.i64", np.int64))
    corrupted = torch.from_numpy(load("corrupted.u8", np.uint8).astype(bool))
    xv, yv = x_all[va].contiguous(), y_train_file[va].contiguous()
    x_test, y_test = x_test_all[te].contiguous(), y_test_file[te].contiguous()
    model = peers.classifier(meta["widths"], load("theta0.f32", np.float32))
    vnet = peers.weighting_net(load("phi0.f32", np.float32))

    per_epoch = x.shape[0] // peers.BATCH
    epochs = int(meta["epochs"])
    total = per_epoch * epochs
    sgd = torch.optim.SGD(model.parameters(), lr=meta["lr"], momentum=meta["momentum"],
                          weight_decay=meta["weight_decay"], nesterov=bool(meta["nesterov"]))
    # bilevel's multistep decay: ×0.1 at 2/3 and again at 5/6 of the training steps
    milestones = [round(total * 2 / 3), round(total * 5 / 6)] if meta["schedule"] == "multistep" else []
    if meta["schedule"] not in ("multistep", "constant"):
        sys.exit(f"label_noise_betty.py: schedule {meta['schedule']} is not set up here (multistep or constant)")
    scheduler = torch.optim.lr_scheduler.MultiStepLR(sgd, milestones=milestones, gamma=0.1)

    adam = torch.optim.Adam(vnet.parameters(), lr=meta["meta_lr"], weight_decay=meta["meta_weight_decay"])
    train_batches = peers.TrainBatches(x, y, int(meta["seed"]))
    val_batches = peers.ValBatches(xv, yv, int(meta["seed"]) + 2)
    if ARGS.impl == "betty":
        step = peers.make_betty(None, model, vnet, train_batches, val_batches, optimizer=sgd, scheduler=scheduler,
                                meta_optimizer=adam)
        step.optimizer = step.inner.optimizer  # Betty steps a patched copy of the one given
    elif ARGS.impl == "torch":
        step = lookahead_step(model, vnet, train_batches.forever(), iter(val_batches), sgd, scheduler, adam)
    else:
        step = after_step(model, vnet, train_batches.forever(), iter(val_batches), sgd, scheduler, adam)

    @torch.no_grad()
    def mean_weights():
        cost = F.cross_entropy(model(x), y, reduction="none")
        w = vnet(cost.unsqueeze(1)).squeeze(1)
        return float(w[~corrupted].mean()), float(w[corrupted].mean())

    rows, t0 = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        for _ in range(per_epoch):
            step()
        model.eval()
        acc = peers.accuracy(model, x_test, y_test)
        clean, wrong = mean_weights()
        model.train()
        rows.append((epoch, acc, clean, wrong))
        print(f"  {ARGS.impl} Meta-Weight-Net seed {int(meta['seed'])} epoch {epoch:2d}/{epochs}  test accuracy {acc:.2f}%  "
              f"mean weight clean {clean:.3f} corrupted {wrong:.3f}", flush=True)
    seconds = time.perf_counter() - t0
    if ARGS.out:
        new = not os.path.exists(ARGS.out)
        with open(ARGS.out, "a") as f:
            if new:
                f.write("implementation,seed,epoch,test_accuracy,weight_clean,weight_corrupted\n")
            for epoch, acc, clean, wrong in rows:
                f.write(f"{ARGS.impl},{int(meta['seed'])},{epoch},{acc:.2f},{clean:.6f},{wrong:.6f}\n")
    import importlib.metadata as md

    print(json.dumps({"implementation": ARGS.impl, "seed": int(meta["seed"]), "epochs": epochs, "steps": total,
                      "last_test_accuracy": rows[-1][1], "best_test_accuracy": max(r[1] for r in rows),
                      "weight_clean": rows[-1][2], "weight_corrupted": rows[-1][3], "seconds": round(seconds, 1),
                      "final_lr": step.optimizer.param_groups[0]["lr"],
                      "versions": {"torch": torch.__version__, "betty-ml": md.version("betty-ml")}}))


if __name__ == "__main__":
    main()
