# SPDX-License-Identifier: MIT
"""The Python side of bench/benchopt: benchopt's bilevel benchmark, its own code.

Two commands, both given the path of a benchmark_bilevel checkout (the repository
benchopt/benchmark_bilevel):

  generate BENCHMARK OUT.bin [--n-inner N --n-outer N --dim-inner D --dim-outer D --seed S]
      Builds the benchmark's `simulated` dataset (datasets/simulated.py, its quadratic oracle)
      with the benchmark's own generator (benchmark_utils/gen_matrices.py), checks that the
      arrays written reproduce the dataset's full-batch functions, and writes them, with the
      starting point and the upper optimum, to OUT.bin (format below) for the C++ side.

  run BENCHMARK OUT.bin --solver NAME [--max-iter K --time-limit S --param key=value ...]
      Builds the dataset and the objective again, instantiates the benchmark's solver class
      (solvers/NAME.py) with the benchmark's parameters, lets it compile (its own warm-up in
      set_objective, timed apart), then runs it through its own run(callback) as benchopt
      does. The callback stops the clock, waits for the result (JAX dispatches
      asynchronously), measures the relative suboptimality of the upper variable in float64
      outside the clock, and restarts it. Prints one line `RESULT {json}`.

The relative suboptimality of an upper point x, on both sides:
    (h(x) - h*) / (h(x0) - h*),   h(x) = F(z*(x), x),  z*(x) = argmin_z G(z, x),
with F and G the full-batch (mean over samples) upper and lower objectives, computed in
closed form in float64 (every function here is quadratic).

OUT.bin, little-endian: 8 bytes magic b"BLQUAD01"; int64 n_inner, n_outer, dim_inner,
dim_outer; then for the lower samples and then for the upper samples, float32 arrays
hess_inner (n, di, di), hess_outer (n, do, do), cross (n, do, di), linear_inner (n, di),
linear_outer (n, do), each sample's objective being
    0.5 z'H_z z + 0.5 x'H_x x + x'C z + a'z + b'x;
then float64: x0 (do), z0 (di), x_star (do), h_star, h_x0, and the smallest and largest
eigenvalues of the lower Hessian and of h's Hessian (4 values).
"""
import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

MAGIC = b"BLQUAD01"


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def setup_benchmark(benchmark):
    benchmark = os.path.abspath(benchmark)
    sys.path.insert(0, benchmark)  # benchmark_utils, as benchopt makes it importable
    # gen_matrices caches its output with joblib in ./__cache__: keep it out of the caller's
    # folder.
    cache = os.environ.get("BILEVEL_BENCH_CACHE")
    if cache:
        os.makedirs(cache, exist_ok=True)
        os.chdir(cache)
    return benchmark


def dataset_params(args):
    return dict(n_samples_inner=args.n_inner, n_samples_outer=args.n_outer,
                dim_inner=args.dim_inner, dim_outer=args.dim_outer,
                random_state=args.seed)


def make_dataset(benchmark, params):
    simulated = load_module(os.path.join(benchmark, "datasets", "simulated.py"),
                            "bb_datasets_simulated")
    dataset = simulated.Dataset.get_instance(**params)
    return simulated, dataset


def dataset_arrays(dataset):
    """The arrays the dataset's get_data builds, by the same calls (gen_matrices is
    memoised, so these are the very arrays)."""
    import jax
    from benchmark_utils.gen_matrices import gen_matrices
    key = jax.random.PRNGKey(dataset.random_state)
    keys = jax.random.split(key, 2)  # get_data's key never changes between its trials
    inner = gen_matrices(dataset.n_samples_inner, dataset.dim_inner, dataset.dim_outer,
                         dataset.L_inner_inner, dataset.L_outer_inner,
                         dataset.L_cross_inner, dataset.mu_inner, keys[0])
    outer = gen_matrices(dataset.n_samples_outer, dataset.dim_inner, dataset.dim_outer,
                         dataset.L_inner_outer, dataset.L_outer_outer,
                         dataset.L_cross_outer, dataset.mu_inner, keys[1])
    return [np.asarray(a) for a in inner], [np.asarray(a) for a in outer]


class Closed:
    """h(x) = F(z*(x), x) in float64, from the sample means."""

    def __init__(self, inner, outer):
        Hz, Hx, C, a, b = [np.asarray(t, dtype=np.float64).mean(axis=0) for t in inner]
        Fz, Fx, Fc, fa, fb = [np.asarray(t, dtype=np.float64).mean(axis=0) for t in outer]
        self.Hz = Hz
        # grad_z G = Hz z + C'x + a = 0  =>  z*(x) = J x + z0
        self.J = -np.linalg.solve(Hz, C.T)
        self.zc = -np.linalg.solve(Hz, a)
        self.F = (Fz, Fx, Fc, fa, fb)
        J, zc = self.J, self.zc
        hess = J.T @ Fz @ J + Fx + Fc @ J + J.T @ Fc.T
        self.hess = 0.5 * (hess + hess.T)
        grad0 = J.T @ Fz @ zc + Fc @ zc + J.T @ fa + fb
        self.x_star = -np.linalg.solve(self.hess, grad0)
        self.h_star = self.h(self.x_star)

    def h(self, x):
        x = np.asarray(x, dtype=np.float64)
        Fz, Fx, Fc, fa, fb = self.F
        z = self.J @ x + self.zc
        return (0.5 * z @ Fz @ z + 0.5 * x @ Fx @ x + x @ Fc @ z + fa @ z + fb @ x)


def generate(args):
    benchmark = setup_benchmark(args.benchmark)
    import jax
    _, dataset = make_dataset(benchmark, dataset_params(args))
    data = dataset.get_data()
    inner, outer = dataset_arrays(dataset)
    # The arrays reproduce the dataset's own full-batch functions.
    rng = np.random.default_rng(0)
    z = rng.standard_normal(args.dim_inner).astype(np.float32)
    x = rng.standard_normal(args.dim_outer).astype(np.float32)
    f_inner_fb = data["pb_inner"][3]
    f_outer_fb = data["pb_outer"][3]

    def value(arrs, z, x):
        Hz, Hx, C, a, b = [t.astype(np.float64) for t in arrs]
        z = z.astype(np.float64)
        x = x.astype(np.float64)
        return np.mean(0.5 * np.einsum("i,nij,j->n", z, Hz, z)
                       + 0.5 * np.einsum("i,nij,j->n", x, Hx, x)
                       + np.einsum("i,nij,j->n", x, C, z) + a @ z + b @ x)
    for name, f, arrs in (("inner", f_inner_fb, inner), ("outer", f_outer_fb, outer)):
        got = float(f(jax.numpy.asarray(z), jax.numpy.asarray(x)))
        want = value(arrs, z, x)
        if abs(got - want) > 1e-4 * max(1.0, abs(want)):
            raise SystemExit(f"the {name} arrays do not reproduce the dataset: {got} vs {want}")
    closed = Closed(inner, outer)
    objective = load_module(os.path.join(benchmark, "objective.py"), "bb_objective")
    obj = objective.Objective.get_instance()
    obj.set_data(**data)
    x0 = np.asarray(obj.outer_var0, dtype=np.float64)
    z0 = np.asarray(obj.inner_var0, dtype=np.float64)
    lower_eigs = np.linalg.eigvalsh(closed.Hz)
    upper_eigs = np.linalg.eigvalsh(closed.hess)
    with open(args.out, "wb") as f:
        f.write(MAGIC)
        np.array([args.n_inner, args.n_outer, args.dim_inner, args.dim_outer],
                 dtype="<i8").tofile(f)
        for arrs in (inner, outer):
            for t in arrs:
                np.ascontiguousarray(t, dtype="<f4").tofile(f)
        tail = np.concatenate([x0, z0, closed.x_star,
                               [closed.h_star, closed.h(x0),
                                lower_eigs[0], lower_eigs[-1],
                                upper_eigs[0], upper_eigs[-1]]])
        tail.astype("<f8").tofile(f)
    print("INSTANCE " + json.dumps(dict(
        file=args.out, h_star=closed.h_star, h_x0=closed.h(x0),
        lower_hessian_eigs=[lower_eigs[0], lower_eigs[-1]],
        upper_hessian_eigs=[upper_eigs[0], upper_eigs[-1]],
        x_star_norm=float(np.linalg.norm(closed.x_star)),
        jax=jax.__version__)))


def read_instance(path):
    with open(path, "rb") as f:
        if f.read(8) != MAGIC:
            raise SystemExit(f"{path}: not an instance file")
        n_in, n_out, di, do = np.fromfile(f, dtype="<i8", count=4)
        sets = []
        for n in (n_in, n_out):
            shapes = [(n, di, di), (n, do, do), (n, do, di), (n, di), (n, do)]
            sets.append([np.fromfile(f, dtype="<f4", count=int(np.prod(s))).reshape(s)
                         for s in shapes])
        tail = np.fromfile(f, dtype="<f8")
    return dict(n_inner=int(n_in), n_outer=int(n_out), dim_inner=int(di), dim_outer=int(do),
                inner=sets[0], outer=sets[1], x0=tail[:do], x_star=tail[do + di:2 * do + di],
                h_star=tail[2 * do + di], h_x0=tail[2 * do + di + 1])


def parse_value(v):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


class TimingCallback:
    """benchopt's callback contract (called before the first step and then every eval_freq
    iterations for the stochastic solvers, every iteration for BOME; returns whether to go
    on), with the clock stopped while the iterate is measured."""

    def __init__(self, solver, closed, h_x0, targets, iters_per_call, max_iter, time_limit):
        self.solver, self.closed, self.h_x0 = solver, closed, h_x0
        self.targets, self.per_call = targets, iters_per_call
        self.max_iter, self.time_limit = max_iter, time_limit
        self.calls, self.elapsed, self.t0 = 0, 0.0, None
        self.reached = [None] * len(targets)
        self.last = None
        self.intervals = []  # seconds between two calls: one eval_freq block of iterations

    def __call__(self):
        import jax
        if self.t0 is not None:
            result = self.solver.get_result()
            jax.block_until_ready(result)
            interval = time.perf_counter() - self.t0
            self.elapsed += interval
            self.intervals.append(interval)
        iteration = self.calls * self.per_call
        self.calls += 1
        x = np.asarray(self.solver.get_result()["outer_var"], dtype=np.float64) \
            if iteration > 0 else None
        if x is not None:
            sub = (self.closed.h(x) - self.closed.h_star) / (self.h_x0 - self.closed.h_star)
            self.last = float(sub)
            if not np.isfinite(sub):
                return False
            for i, t in enumerate(self.targets):
                if self.reached[i] is None and sub <= t:
                    self.reached[i] = (iteration, self.elapsed * 1e3)
        if self.reached[-1] is not None or iteration >= self.max_iter or \
                self.elapsed >= self.time_limit:
            self.iterations = iteration
            return False
        self.t0 = time.perf_counter()
        return True


def run(args):
    benchmark = setup_benchmark(args.benchmark)
    import jax
    inst = read_instance(args.instance)
    params = dict(n_samples_inner=inst["n_inner"], n_samples_outer=inst["n_outer"],
                  dim_inner=inst["dim_inner"], dim_outer=inst["dim_outer"],
                  random_state=args.seed)
    _, dataset = make_dataset(benchmark, params)
    data = dataset.get_data()
    inner, outer = dataset_arrays(dataset)
    for a, b in zip(inner + outer, inst["inner"] + inst["outer"]):
        if not np.array_equal(a, b):
            raise SystemExit("the instance file is not this dataset's")
    closed = Closed(inner, outer)
    objective = load_module(os.path.join(benchmark, "objective.py"), "bb_objective")
    obj = objective.Objective.get_instance()
    obj.set_data(**data)
    module = load_module(os.path.join(benchmark, "solvers", args.solver + ".py"),
                         "bb_solver_" + args.solver)
    solver_params = {k: parse_value(v) for k, v in (p.split("=", 1) for p in args.param)}
    solver = module.Solver.get_instance(**solver_params)
    t = time.perf_counter()
    skip, reason = solver._set_objective(obj)  # set_objective: JIT warm-up (run_once(2))
    warmup_ms = (time.perf_counter() - t) * 1e3
    if skip:
        raise SystemExit(f"solver skipped: {reason}")
    per_call = getattr(solver, "eval_freq", 1)
    targets = [1e-1, 1e-2, 1e-3, 1e-4]
    cb = TimingCallback(solver, closed, inst["h_x0"], targets, per_call, args.max_iter,
                        args.time_limit)
    solver.run(cb)
    if not hasattr(cb, "iterations"):
        cb.iterations = (cb.calls - 1) * per_call
    # A solver that compiles inside run() (BOME builds new jitted functions there, so the
    # warm-up's compilation is not reused) pays it in its first block: estimated as the
    # first block's excess over the median block, and reported apart.
    iv = cb.intervals
    in_run_compile_ms = 0.0
    if len(iv) > 2:
        in_run_compile_ms = max(0.0, iv[0] - float(np.median(iv[1:]))) * 1e3
    print("RESULT " + json.dumps(dict(
        side="benchopt", solver=args.solver, params=solver._parameters,
        warmup_ms=warmup_ms, in_run_compile_ms=in_run_compile_ms, iterations=cb.iterations, time_ms=cb.elapsed * 1e3,
        reached=cb.reached, final=cb.last, jax=jax.__version__)), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("benchmark")
    g.add_argument("out")
    g.add_argument("--n-inner", type=int, default=1024)
    g.add_argument("--n-outer", type=int, default=1024)
    g.add_argument("--dim-inner", type=int, default=100)
    g.add_argument("--dim-outer", type=int, default=100)
    g.add_argument("--seed", type=int, default=2442)
    r = sub.add_parser("run")
    r.add_argument("benchmark")
    r.add_argument("instance")
    r.add_argument("--solver", required=True)
    r.add_argument("--seed", type=int, default=2442, help="the dataset's random_state")
    r.add_argument("--max-iter", type=int, default=100000)
    r.add_argument("--time-limit", type=float, default=60.0, help="seconds of solver time")
    r.add_argument("--param", action="append", default=[], help="solver parameter key=value")
    args = p.parse_args()
    args.out = os.path.abspath(args.out) if args.command == "generate" else None
    if args.command == "run":
        args.instance = os.path.abspath(args.instance)
    (generate if args.command == "generate" else run)(args)


if __name__ == "__main__":
    main()
