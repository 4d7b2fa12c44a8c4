#!/usr/bin/env python3
"""Reference data for include/diffusion/torch_compat.hpp (tests/test_torch_compat.cpp).

Writes two small files:

  tests/data/torch_randn.ref  -- torch.manual_seed(s); torch.randn(...) on the CPU, from the
                                 torch that this interpreter imports (Debian's python3-torch
                                 1.13.1: run with /usr/bin/python3).
  tests/data/philox_gpu.ref   -- AUTOMATIC1111's modules/rng_philox.py Generator(seed).randn
                                 (numpy), imported from the path given with --rng-philox.

Usage:

    /usr/bin/python3 tools/gen_torch_reference.py tests/data --rng-philox /path/to/modules/rng_philox.py

The torch values are produced twice, in child processes, once with torch's own choice of CPU
kernel (AVX2 on an AVX2 machine without AVX-512) and once with ATEN_CPU_CAPABILITY=default
(the scalar kernel, which 1.13 also uses on AVX-512 machines). Only float32 with n >= 16
differs between the two (the AVX2 kernel has its own float log/sincos); the double path and the
n < 16 path are the same code in both, and the script checks that they agree bit for bit.

Every value is written as a hexadecimal float (float.hex()), so strtod reads back the exact
float32/float64. The output is deterministic.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys

SEEDS = [0, 42, 3141592653]
SIZES = [1, 2, 7, 15, 16, 17, 31, 100, 16384]
BIG = 16384


def hexf(x):
    """float.hex() without the trailing zeros of the mantissa (still exact, still strtod-readable)."""
    h = float(x).hex()
    mant, exp = h.split("p")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return mant + "p" + exp


def debian_package_version():
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-torch"], capture_output=True, text=True)
        return res.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def big_indices(n):
    """The indices recorded for a large tensor: both ends and a stride through the middle."""
    idx = set(range(0, 24)) | set(range(n - 24, n)) | set(range(0, n, 263))
    return sorted(i for i in idx if i < n)


def torch_cases():
    """(name, seed, calls): calls is a list of (dtype letter, shape)."""
    cases = []
    for seed in SEEDS:
        for dt in "fd":
            for n in SIZES:
                cases.append((f"{dt}{n}", seed, [(dt, (n,))]))
    # Successive calls: the MT19937 state advances, and the n < 16 path's cached second
    # normal (a double, shared by float and double requests) carries over between calls.
    cases.append(("seq_f", 7, [("f", (1,)), ("f", (1,)), ("f", (3,)), ("f", (20,)), ("f", (1,)),
                               ("f", (16,)), ("f", (5,)), ("f", (33,))]))
    cases.append(("seq_d", 7, [("d", (3,)), ("d", (17,)), ("d", (1,)), ("d", (1,)), ("d", (64,))]))
    cases.append(("seq_mixed", 123, [("f", (1,)), ("d", (1,)), ("d", (5,)), ("f", (7,)), ("f", (40,)),
                                     ("d", (2,)), ("f", (1,)), ("d", (16,))]))
    # The usual Stable Diffusion latent: same stream as n = 16384.
    cases.append(("latent", 42, [("f", (1, 4, 64, 64))]))
    cases.append(("latent", 1234, [("f", (1, 4, 64, 64)), ("f", (1, 4, 64, 64))]))
    return cases


def run_torch_child():
    """Child process: print the torch values as JSON (hex strings)."""
    import torch
    torch.set_num_threads(1)
    out = {"version": torch.__version__, "config": torch.__config__.show(), "cases": []}
    for name, seed, calls in torch_cases():
        torch.manual_seed(seed)
        vals = []
        for dt, shape in calls:
            t = torch.randn(*shape, dtype=torch.float32 if dt == "f" else torch.float64)
            flat = t.reshape(-1)
            vals.append([hexf(v) for v in flat.tolist()])
        out["cases"].append({"name": name, "seed": seed, "calls": [[dt, list(s)] for dt, s in calls],
                             "values": vals})
    # The latent shape gives exactly the n = 16384 stream.
    torch.manual_seed(42)
    a = torch.randn(1, 4, 64, 64).reshape(-1)
    torch.manual_seed(42)
    b = torch.randn(BIG)
    assert torch.equal(a, b)
    json.dump(out, sys.stdout)


def torch_values(capability):
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-child"], env=env,
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout)


def capability_line(config):
    for line in config.splitlines():
        if "CPU capability usage" in line:
            return line.strip().lstrip("- ")
    return "CPU capability usage: unknown"


def write_torch(outdir):
    native = torch_values(None)
    scalar = torch_values("default")
    assert native["version"] == scalar["version"]
    lines = [
        "# torch.manual_seed(seed); torch.randn(...) on the CPU, torch " + native["version"] +
        " (Debian python3-torch " + debian_package_version() + ").",
        "# Generated by tools/gen_torch_reference.py (see tools/README.md); do not edit.",
        "# kernel 'native': " + capability_line(native["config"]) + " (torch's own choice on this machine).",
        "# kernel 'default': " + capability_line(scalar["config"]) + " (ATEN_CPU_CAPABILITY=default,",
        "#   the scalar kernel; torch 1.13 runs it on AVX-512 machines too).",
        "# Only float32 calls with n >= 16 differ between the kernels; they are written for both.",
        "# Every other value is the same in both kernels (checked) and written once, kernel 'any'.",
        "#",
        "# case <id> <name> <seed> <calls>   calls: comma list of <f|d><shape>, f = float32, d = float64,",
        "#                                   shape like 16 or 1x4x64x64; all calls follow one manual_seed.",
        "# <id> <kernel> <call> <index> <value>   value: the exact float32/float64 as a hex float.",
        "# Large calls (n = 16384) list a subset of indices: the first and last 24 and every 263rd.",
    ]
    for cid, (nc, sc) in enumerate(zip(native["cases"], scalar["cases"])):
        assert nc["name"] == sc["name"] and nc["seed"] == sc["seed"]
        calls = ",".join(dt + "x".join(str(d) for d in s) for dt, s in nc["calls"])
        lines.append(f"case {cid} {nc['name']} {nc['seed']} {calls}")
        for k, ((dt, shape), vn, vs) in enumerate(zip(nc["calls"], nc["values"], sc["values"])):
            n = len(vn)
            idx = big_indices(n) if n > 1000 else range(n)
            differs = dt == "f" and n >= 16
            if not differs:
                assert vn == vs, (nc["name"], k)
            for i in idx:
                if differs:
                    lines.append(f"{cid} native {k} {i} {vn[i]}")
                    lines.append(f"{cid} default {k} {i} {vs[i]}")
                else:
                    lines.append(f"{cid} any {k} {i} {vn[i]}")
    path = os.path.join(outdir, "torch_randn.ref")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_philox(outdir, rng_philox_path):
    import numpy as np
    spec = importlib.util.spec_from_file_location("rng_philox", rng_philox_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seeds = [0, 1, 42, 4294967295, 1099511627783]  # the last one uses both 32-bit key words
    shapes = [(1,), (7,), (3, 4), (100,), (4, 64, 64)]
    lines = [
        "# AUTOMATIC1111 stable-diffusion-webui modules/rng_philox.py (numpy " + np.__version__ + "):",
        "# g = Generator(seed); g.randn(shape) called once per shape, in this order, on one generator:",
        "#   " + ", ".join(str(s) for s in shapes),
        "# so call k uses Philox counter word 0 = k. Generated by tools/gen_torch_reference.py",
        "# (see tools/README.md for the commit of the A1111 file); do not edit.",
        "# <seed> <call> <index> <value>   value: the float32 result as a hex float.",
        "# The last call (4x64x64 = 16384 values) lists the first and last 24 indices and every 263rd.",
    ]
    for seed in seeds:
        g = mod.Generator(seed)
        for k, shape in enumerate(shapes):
            v = g.randn(shape).reshape(-1)
            assert v.dtype == np.float32
            n = v.size
            idx = big_indices(n) if n > 1000 else range(n)
            for i in idx:
                lines.append(f"{seed} {k} {i} {hexf(v[i])}")
    path = os.path.join(outdir, "philox_gpu.ref")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--torch-child":
        run_torch_child()
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--rng-philox", required=True, help="path of A1111's modules/rng_philox.py")
    args = ap.parse_args()
    for p in (write_torch(args.outdir), write_philox(args.outdir, args.rng_philox)):
        print(p, os.path.getsize(p), "bytes")


if __name__ == "__main__":
    main()
