#!/usr/bin/env python3
"""Turn bench_kernels (and bench_torch) JSON into markdown tables of ratios.

Usage (scripts/bench-table.sh calls it):
    bench_table.py --kernels K.json [--torch T.json] [--build-dir DIR] [--title TITLE]

Every number is a ratio of medians from the given files (run with
--benchmark_repetitions=N --benchmark_report_aggregates_only=true), real time:
"vs X" = time of X / time of ours (> 1: ours is faster); "of bw" = ours' bytes/s over the
measured 2-read-1-write limit at that size (the best of the triad with ordinary and with
non-temporal stores); "2 threads" = time of ours / time of ours_2t, with "=" when the 2-thread
output was bit-identical to the 1-thread output. Standard library only.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys

STEPS = [
    ("normals", "normals alone (Philox + Box-Muller)"),
    ("ddpm", "DDPM ancestral step with noise (writes x̂₀ too)"),
    ("ddim", "DDIM η = 0 (writes x̂₀ too)"),
    ("q_sample", "q_sample, given noise"),
    ("q_sample_rng", "q_sample drawing its noise (training)"),
    ("cfg", "CFG combination"),
    ("euler", "Euler"),
    ("euler_a", "Euler ancestral (with noise)"),
    ("langevin", "Langevin (with noise)"),
    ("flow_euler", "rectified-flow Euler (FlowMatchEuler)"),
    ("flow_sde", "rectified-flow stochastic step (with noise)"),
    # The sampler steps of issue 12 (bench_kernels and bench_torch, 16 K to 4 M): the library's public
    # step function in its steady state vs a plain loop and the step in LibTorch as the reference writes it.
    ("dpmpp_2m", "DPM-Solver++(2M)"),
    ("dpmpp_2m_sde", "DPM-Solver++(2M) SDE, η = 1 (with noise)"),
    ("dpmpp_3m_sde", "DPM-Solver++(3M) SDE, η = 1 (with noise)"),
    ("lms", "linear multistep, order 4"),
    ("unipc", "UniPC, order 2, bh2, with the corrector"),
    ("deis", "DEIS, order 3 (log ρ)"),
    ("plms", "PLMS (PNDM), order 4"),
    ("dpm2", "DPM2, both stages"),
    ("dpmpp_2s_ancestral", "DPM++(2S) ancestral, both stages (with noise)"),
    ("dpmpp_sde", "DPM++ SDE, both stages (with noise)"),
    ("lcm", "LCM step (with noise)"),
    ("tcd", "TCD step, γ = 0.3 (with noise)"),
    ("cfgpp_euler", "CFG++ Euler"),
    ("res_multistep", "RES multistep (second order, η = 0)"),
    ("er_sde", "ER-SDE, stage 3 (with noise)"),
    ("sa_solver", "SA-Solver, τ = 1, orders 3 and 3 (with noise)"),
    ("sde_dpmsolver", "DPM-Solver SDE (sde-dpmsolver), order 2 (with noise)"),
    ("ipndm", "iPNDM, order 4"),
    ("dpmpp_3s", "singlestep DPM-Solver++, order 3 (midpoint)"),
]
NOISE_FREE = ["ddim", "q_sample", "cfg", "euler", "flow_euler"]
SIZE_NAMES = {16384: "16 K", 262144: "256 K", 4194304: "4 M", 67108864: "64 M"}


def load(path, parts_wanted=3, clock="real"):
    """{(group, impl, size): record} of the median aggregates (or the plain runs).

    record["ns"] is the time used for ratios: with clock == "cpu", the CPU time of the timing
    thread for one-thread runs (it excludes the time the process waited for a core, so ratios
    survive other processes on a shared machine) and real time for 2-thread runs (implementations
    ending in "_2t", whose work the calling thread's CPU time does not see); the rate counters are
    rescaled to the same clock. record["ns_real"] is always real time."""
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"])
        parts = name.split("/")
        if parts and parts[-1] == "real_time":
            parts = parts[:-1]
        if parts_wanted == 2 and len(parts) == 2:
            parts = parts + ["0"]
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}[b.get("time_unit", "ns")]
        rec = dict(b)
        rec["ns_real"] = b["real_time"] * scale
        rec["ns"] = rec["ns_real"]
        if clock == "cpu" and not parts[1].endswith("_2t") and parts[0] != "overhead" and b.get("cpu_time"):
            rec["ns"] = b["cpu_time"] * scale
            f = rec["ns_real"] / rec["ns"]
            for key in ("bytes_per_second", "normals_per_second", "items_per_second"):
                if key in rec:
                    rec[key] = rec[key] * f
        out[(parts[0], parts[1], int(parts[2]))] = rec
    return out, data.get("context", {})


def fmt_ratio(x):
    if x is None:
        return "—"
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×" if x < 100 else f"{x:.0f}×"


def fmt_rate(x, unit):
    if x is None:
        return "—"
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if x >= div:
            return f"{x / div:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def fmt_time(ns):
    if ns is None:
        return "—"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def machine_line(build_dir, context):
    lscpu = sh(["lscpu"])
    model = re.search(r"Model name:\s*(.+)", lscpu)
    cpus = re.search(r"^CPU\(s\):\s*(\d+)", lscpu, re.M)
    threads = re.search(r"Thread\(s\) per core:\s*(\d+)", lscpu)
    compiler, flags = "?", ""
    if build_dir and os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        cache = open(os.path.join(build_dir, "CMakeCache.txt")).read()

        def var(n):
            m = re.search(rf"^{n}:\w+=(.*)$", cache, re.M)
            return m.group(1).strip() if m else ""

        cxx = var("CMAKE_CXX_COMPILER")
        compiler = sh([cxx, "--version"]).splitlines()[0] if cxx else "?"
        flags = " ".join(x for x in (var("CMAKE_CXX_FLAGS"), var("CMAKE_CXX_FLAGS_RELEASE")) if x)
    load = context.get("load_avg")
    load_s = " / ".join(f"{x:.2f}" for x in load) if load else "?"
    caches = context.get("caches", [])
    cache_s = ", ".join(f"L{c['level']}{'d' if c['type'] == 'Data' else '' if c['type'] == 'Unified' else 'i'} "
                        f"{c['size'] // 1024} KiB" for c in caches if c.get("type") in ("Data", "Unified"))
    head = sh(["git", "rev-parse", "--short", "HEAD"]).strip()
    dirty = sh(["git", "status", "--porcelain", "--", "include"]).strip()
    rev = f"; library at {head}{' + uncommitted changes in include/' if dirty else ''}" if head else ""
    return (f"{model.group(1).strip() if model else platform.processor()}, "
            f"{cpus.group(1) if cpus else '?'} CPUs ({threads.group(1) if threads else '?'} thread/core), {cache_s}; "
            f"{compiler}; flags `{flags}`; load average at start {load_s}; {platform.system()} {platform.release()}{rev}")


def schedule_table(path):
    S, _ = load(path, parts_wanted=2)
    fams = []
    for (g, f, n) in S:
        if g == "build" and f not in fams:
            fams.append(f)
    out = ["| β family | T | betas + tables | tables from betas | naive float32 | time, tables ÷ naive |",
           "|---|---:|---:|---:|---:|---:|"]
    for f in fams:
        for T in (1000, 4000):
            b, fb, nv = (S.get((g, f, T)) for g in ("build", "from_betas", "naive_float32"))
            if not b:
                continue
            r = fb["ns"] / nv["ns"] if fb and nv else None
            out.append(f"| {f} | {T} | {fmt_time(b['ns'])} | {fmt_time(fb['ns']) if fb else '—'} | "
                       f"{fmt_time(nv['ns']) if nv else '—'} | {fmt_ratio(r)} |")
    out.append("")
    out.append("| lookup | time |")
    out.append("|---|---:|")
    for (g, f, n), r in sorted(S.items()):
        if g == "lookup":
            out.append(f"| {f} | {r['ns']:.1f} ns |")
    out.append("")
    sys.stdout.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", required=True)
    ap.add_argument("--torch")
    ap.add_argument("--build-dir")
    ap.add_argument("--title", default="")
    ap.add_argument("--schedule", help="bench_schedule JSON: print its table only")
    ap.add_argument("--clock", choices=("cpu", "real"), default="cpu",
                    help="one-thread times: CPU time of the timing thread (default) or real time")
    a = ap.parse_args()
    if a.schedule:
        schedule_table(a.schedule)
        return

    K, ctx = load(a.kernels, clock=a.clock)
    T = {}
    if a.torch and os.path.exists(a.torch):
        T, _ = load(a.torch, clock=a.clock)
    have_torch = bool(T)

    def t(group, impl, n, src=None):
        r = (src or K).get((group, impl, n))
        return r["ns"] if r else None

    def t_real(group, impl, n, src=None):
        r = (src or K).get((group, impl, n))
        return r["ns_real"] if r else None

    def ctr(group, impl, n, key, src=None):
        r = (src or K).get((group, impl, n))
        return r.get(key) if r else None

    def ratio(base, ours):
        return base / ours if base and ours else None

    sizes = sorted({n for (_, _, n) in K})

    def bw_limit(n):
        vals = [ctr("bandwidth", i, n, "bytes_per_second") for i in ("triad", "triad_nt")]
        vals = [v for v in vals if v]
        return max(vals) if vals else None

    lines = []
    if a.title:
        lines.append(f"### {a.title}\n")
    lines.append(f"Machine: {machine_line(a.build_dir, ctx)}.\n")
    load_avg = ctx.get("load_avg") or []
    if load_avg and load_avg[0] > 0.5 * (ctx.get("num_cpus") or 1):
        lines.append(f"**Warning:** the 1-minute load average was {load_avg[0]:.2f} on {ctx.get('num_cpus')} CPUs when "
                     "this run started: other processes shared the cores and the memory bus, so these ratios "
                     "(threads and bandwidth above all) are not representative.\n")
    reps = max((r.get("repetitions", 1) for r in K.values()), default=1)
    clock_s = ("CPU time of the timing thread for 1-thread runs (robust to other processes on a shared machine), "
               "real time for 2-thread runs and the 2-thread speedup" if a.clock == "cpu" else "real time")
    lines.append(f"Ratios of medians ({reps} repetitions, in random interleaved order) of {clock_s}; float32. \"vs X\" = time of X / time of ours "
                 "(> 1: ours faster). \"of bw\" = ours' bytes/s (minimum traffic: 12 B/element, 16 B for DDPM and "
                 "DDIM which also write x̂₀, 8 B for q_sample_rng, 4 B for normals; the sampler steps count every array their "
                 "step reads or writes, history included: 20 B dpmpp_2m(_sde), 24 B dpmpp_3m_sde and deis, 28 B lms, unipc, "
                 "plms, dpm2 and ipndm, 32 B dpmpp_2s_ancestral, 40 B dpmpp_sde and sa_solver, 12 B lcm and tcd, 16 B "
                 "cfgpp_euler, 20 B res_multistep, sde_dpmsolver and dpmpp_3s, 24 B er_sde) over the "
                 "measured 2-read-1-write limit at that size. "
                 "\"2 thr\" = 1-thread time / 2-thread time (parallel_policy{.threads = 2}: one thread below 128 K "
                 "elements), \"=\" when bit-identical to the 1-thread output.\n")

    head = "| step | size | ours | ours GB/s | vs plain | vs Eigen | vs unfused |"
    sep = "|---|---|---:|---:|---:|---:|---:|"
    if have_torch:
        head += " vs LibTorch |"
        sep += "---:|"
    head += " of bw | 2 thr | allocs/step |"
    sep += "---:|---:|---:|"
    lines += [head, sep]
    for g, _desc in STEPS:
        for n in sizes:
            ours = t(g, "ours", n)
            if ours is None:
                continue
            bps = ctr(g, "ours", n, "bytes_per_second")
            lim = bw_limit(n)
            two = t(g, "ours_2t", n)
            ident = ctr(g, "ours_2t", n, "bit_identical")
            two_s = fmt_ratio(ratio(t_real(g, "ours", n), two)) + (" =" if ident == 1 else " ≠" if ident == 0 else "")
            allocs = ctr(g, "ours", n, "allocs_per_iter")
            allocs2 = ctr(g, "ours_2t", n, "allocs_per_iter")
            gbs = f"{bps / 2**30:.1f}" if bps else "—"
            row = f"| {g} | {SIZE_NAMES.get(n, n)} | {fmt_time(ours)} | {gbs} | "
            row += f"{fmt_ratio(ratio(t(g, 'plain', n), ours))} | {fmt_ratio(ratio(t(g, 'eigen', n), ours))} | "
            row += f"{fmt_ratio(ratio(t(g, 'unfused', n), ours))} |"
            if have_torch:
                row += f" {fmt_ratio(ratio(t(g, 'torch', n, T), ours))} |"
            frac = bps / lim if bps and lim else None
            row += f" {frac * 100:.0f} % |" if frac else " — |"
            row += f" {two_s} |"
            row += f" {allocs:.0f} / {allocs2:.0f} |" if allocs is not None and allocs2 is not None else " — |"
            lines.append(row)
    lines.append("\n(GB/s = 2^30 B/s; allocs/step = heap allocations per call, 1 thread / 2 threads.)\n")

    # Bandwidth.
    lines.append("| size | copy | triad (2R1W) | triad, NT stores | triad, 2 threads |")
    lines.append("|---|---:|---:|---:|---:|")
    for n in sizes:
        vals = [ctr("bandwidth", i, n, "bytes_per_second") for i in ("copy", "triad", "triad_nt", "triad_2t")]
        lines.append(f"| {SIZE_NAMES.get(n, n)} | " + " | ".join(f"{v / 2**30:.1f} GB/s" if v else "—" for v in vals) + " |")
    sj = [r["ns"] for (g, i, n), r in K.items() if g == "overhead" and i == "spawn_join_2t"]
    if sj:
        lines.append(f"\nStarting and joining the second thread of parallel_policy{{.threads = 2}} around an empty "
                     f"body: {fmt_time(min(sj))} per call.")
    lines.append("")

    # Noise.
    head = "| size | ours normals/s | vs std::normal_distribution |"
    sep = "|---|---:|---:|"
    if have_torch:
        head += " vs torch::randn | vs torch::randn, 2 threads |"
        sep += "---:|---:|"
    head += " DDPM step / normals alone |"
    sep += "---:|"
    lines += [head, sep]
    for n in sizes:
        ours = t("normals", "ours", n)
        if ours is None:
            continue
        row = f"| {SIZE_NAMES.get(n, n)} | {fmt_rate(ctr('normals', 'ours', n, 'normals_per_second'), '/s')} | "
        row += f"{fmt_ratio(ratio(t('normals', 'plain', n), ours))} |"
        if have_torch:
            row += f" {fmt_ratio(ratio(t('normals', 'torch', n, T), ours))} | "
            row += f"{fmt_ratio(ratio(t('normals', 'torch_2t', n, T), t('normals', 'ours_2t', n)))} |"
        d = t("ddpm", "ours", n)
        row += f" {d / ours:.2f} |" if d else " — |"
        lines.append(row)
    lines.append("")

    # Targets.
    def fmt_check(ok):
        return "met" if ok else "**not met**"

    checks = []
    v = ctr("normals", "ours", 16384, "normals_per_second")
    if v:
        checks.append(("normals ≥ 700 M/s per core in cache (16 K)", f"{v / 1e6:.0f} M/s", v >= 700e6))
    if have_torch:
        rs = [ratio(t("normals", "torch", n, T), t("normals", "ours", n)) for n in sizes]
        rs = [r for r in rs if r]
        if rs:
            checks.append(("normals ≥ 5× torch::randn (1 thread, every size)", f"min {min(rs):.1f}×", min(rs) >= 5))
    rs = [ratio(t("normals", "plain", n), t("normals", "ours", n)) for n in sizes]
    rs = [r for r in rs if r]
    if rs:
        checks.append(("normals ≥ 10× std::normal_distribution (every size)", f"min {min(rs):.1f}×", min(rs) >= 10))
    rs = [t("ddpm", "ours", n) / t("normals", "ours", n) for n in sizes if t("ddpm", "ours", n) and t("normals", "ours", n)]
    if rs:
        checks.append(("fused DDPM step ≤ 1.15× normals alone (every size)", f"max {max(rs):.2f}×", max(rs) <= 1.15))
    big = max(sizes) if sizes else None
    if big:
        fr = {g: (ctr(g, "ours", big, "bytes_per_second") or 0) / (bw_limit(big) or 1) for g in NOISE_FREE}
        checks.append((f"noise-free steps at {SIZE_NAMES.get(big, big)} ≥ 85 % of 2R1W bandwidth",
                       ", ".join(f"{g} {f * 100:.0f} %" for g, f in fr.items()), min(fr.values()) >= 0.85))
    if have_torch:
        r = ratio(t("ddpm", "torch", 16384, T), t("ddpm", "ours", 16384))
        if r:
            checks.append(("DDPM step, 4×64×64, 1 thread ≥ 5× LibTorch", f"{r:.1f}×", r >= 5))
        rs = [ratio(t("ddpm", "torch", n, T), t("ddpm", "ours", n)) for n in sizes if n >= 4194304]
        rs = [r for r in rs if r]
        if rs:
            checks.append(("DDPM step ≥ 10× LibTorch at ≥ 4 M", f"min {min(rs):.1f}×", min(rs) >= 10))
        rs = {g: ratio(t(g, "torch", 16384, T), t(g, "ours", 16384)) for g, _ in STEPS}
        rs = {g: r for g, r in rs.items() if r}
        if rs:
            worst = min(rs, key=rs.get)
            checks.append(("every step, 4×64×64, 1 thread ≥ 5× LibTorch", f"min {rs[worst]:.1f}× ({worst})",
                           rs[worst] >= 5))
    al = [ctr(g, "ours", n, "allocs_per_iter") for g, _ in STEPS for n in sizes]
    al = [x for x in al if x is not None]
    al2 = [ctr(g, "ours_2t", n, "allocs_per_iter") for g, _ in STEPS for n in sizes]
    al2 = [x for x in al2 if x is not None]
    if al:
        checks.append(("zero heap allocations per step (1 thread)", f"max {max(al):.0f}", max(al) == 0))
    if al2:
        checks.append(("zero heap allocations per step (2 threads)", f"max {max(al2):.1f}", max(al2) == 0))
    ids = [ctr(g, "ours_2t", n, "bit_identical") for g, _ in STEPS for n in sizes]
    ids = [x for x in ids if x is not None]
    if ids:
        checks.append(("2 threads bit-identical (every step and size)", f"{sum(1 for x in ids if x == 1)}/{len(ids)}",
                       all(x == 1 for x in ids)))
    sp = {(g, n): ratio(t_real(g, "ours", n), t(g, "ours_2t", n)) for g, _ in STEPS for n in sizes if n >= 262144}
    sp = {k: v for k, v in sp.items() if v}
    if sp:
        worst = min(sp, key=sp.get)
        checks.append(("2 threads ≥ 1.7× at ≥ 256 K (every step)",
                       f"min {sp[worst]:.2f}× ({worst[0]} {SIZE_NAMES.get(worst[1], worst[1])})", sp[worst] >= 1.7))
    lines.append("| target | measured | |")
    lines.append("|---|---|---|")
    for name, val, ok in checks:
        lines.append(f"| {name} | {val} | {fmt_check(ok)} |")
    lines.append("")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
