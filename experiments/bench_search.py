"""Benchmark the GDAS search step on NAS-Bench-201: cost against its limit, modes, memory, throughput.

A benchmark, not a timed test: it prints a table (last) and writes JSON; nothing
here passes or fails on speed. Setting: the nb201 space, C=16, N=5, batch 64,
32x32 inputs, 10 classes, every CPU core in use. Sections (``--only``):

step        Per architecture (8 seeded random + all nor_conv_3x3 + all skip_connect),
            the median time of one WEIGHT step (zero_grad, forward, cross-entropy,
            backward, clip_grad_norm_(5), SGD step) in the gdas supernet, against the
            same step of the discrete network ``build_network(geno, affine=False)``:
              forced   the supernet with ``net.forced(geno)``: the chosen ops only;
              sampled  the real sampled path of the weight step: logits frozen
                       (``requires_grad_(False)`` as search.py does) and +30 on the
                       chosen op of each edge, so the Gumbel sample is that
                       architecture (checked on every forward).
              discrete_copy  an A/A control: ``net.discretize(geno)``, a second discrete
                       network doing the same work; its ratio to ``discrete`` is the
                       noise floor of the measurement on this machine.
            The variants run interleaved (their order rotating each round) after a
            warm-up, so machine noise hits all alike; medians are compared (and the
            median of the per-round ratios, ``ratio_paired``).
            The limit: ratio 1.00 (the supernet can do no less work); target <= 1.05.
modes       One full search iteration (``nas.searcher.Searcher.step``: weight step then
            architecture step) in gdas, darts and snas modes, interleaved; gdas's
            speedup over darts and snas. Target: gdas >= 4x faster than darts.
            The optimisers are those of ``configs/nb201_cifar10_gdas.yaml`` (SGD 0.025 with
            clip 5, Adam 3e-4), read from the shipped config.
memory      Peak memory of a search iteration, every case in its own fresh process:
            CPU: peak RSS (VmHWM, reset just before the first step; ru_maxrss cannot
            be used: the kernel hands a parent's high-water mark to its children) minus
            the RSS just before the first step, after building the model and the data;
            CUDA: max_memory_allocated minus the memory allocated before the first step. gdas (sampled path of the
            all-nor_conv_3x3 architecture, and random sampling at initial logits),
            darts and snas, against the discrete all-nor_conv_3x3 network's training
            step. Target: gdas <= 1.15x discrete. On CPU every case runs twice:
            with glibc's default allocator, whose dynamic mmap threshold keeps freed
            activations in the heap (so RSS also records the allocator's history:
            a search iteration runs two different passes, a training step one), and
            with MALLOC_MMAP_THRESHOLD_ fixed at 128 KiB, where freed tensors go back
            to the OS at once and the peak RSS follows the live tensors. The
            summary's ratios are the fixed-threshold ones; both are in the JSON.
pool        The 3x3 average pooling (``nas.ops.AvgPool3x3``, a depthwise box filter times
            1/count on the CPU) against torch's ``nn.AvgPool2d(count_include_pad=False)``:
            forward + backward of the op at each stage's shape, and a full darts and gdas
            search iteration with each, at this setting and at the CPU config's C and N
            (configs/nb201_cifar10_cpu.yaml), interleaved; torch's time over ours, paired.
throughput  Images per second over search iterations of the nb201_cifar10_gdas setting,
            fed by ``nas.data.BatchLoader`` (random uint8 images, augmentation on),
            counting the weight and the architecture batches; the full search
            (250 epochs x 25000//64 iterations) estimated from it, against the
            28,926 s the NAS-Bench-201 paper reports for GDAS on one V100 GPU.

On CUDA it also counts host-device synchronisations per search iteration
(``torch.cuda.set_sync_debug_mode("warn")``) and times bf16 autocast and
channels_last variants of the gdas iteration.

    python -m experiments.bench_search                       # full run, every core (from the repository root)
    python -m experiments.bench_search --threads 1           # full run on cores shared with other jobs
    python -m experiments.bench_search --quick --out /tmp/b.json
    python -m experiments.bench_search --only step --repeats 9
    python -m experiments.bench_search --before old.json     # keep an earlier run's figures as "before"

Threads: every core by default, as asked. Where other jobs share the cores, torch's
intra-op threads wait for each other at every op and the timings fall apart (on 2
shared cores, 2 threads ran a step 3-10x slower than 1 thread and the A/A control
was off by up to 87%); ``--threads 1`` then measures the code rather than the
scheduler. A full run took 10 minutes with one thread on such a machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from experiments.machine import command_line, git_state, machine
from experiments.settings import RESULTS, ROOT
from nas.config import load_config
from nas.cost import CostPenalty, cost_table
from nas.data import BatchLoader
from nas.errors import UserError
from nas.genotype import Genotype
from nas.io import atomic_write_text
from nas.ops import NB201_OPS, AvgPool3x3, Pool
from nas.runtime import find_config, resolve_device, set_cpu_threads
from nas.searcher import Searcher
from nas.spaces import build_network, build_supernet

DEFAULT_OUT = RESULTS / "bench_search.json"
SECTIONS = ("step", "modes", "pool", "memory", "throughput")
MODES = ("gdas", "darts", "snas")
# Logit added to the chosen op of each edge: another op wins a Gumbel-max draw with probability
# about 4 * exp(-30) ~ 4e-13 per edge (every forward checks that it did not).
BIAS = 30.0
# The search section of the GDAS config (configs/nb201_cifar10_gdas.yaml): its optimisers
# (SGD lr 0.025, momentum 0.9, nesterov, weight decay 5e-4, clip 5; Adam 3e-4) drive every step.
SEARCH = load_config(find_config("configs/nb201_cifar10_gdas.yaml")).search
LOCAL_CONTEXT = (1, 2, 3, 4, 3, 2)  # the cell search.estimator=local compares in: skip, 1x1, 3x3, pool, 3x3, 1x1
CPU_SUPERNET = load_config(find_config("configs/nb201_cifar10_cpu.yaml")).supernet
GRAD_CLIP = SEARCH.weights.grad_clip
W_OPT = dict(
    lr=SEARCH.weights.lr,
    momentum=SEARCH.weights.momentum,
    nesterov=SEARCH.weights.nesterov,
    weight_decay=SEARCH.weights.weight_decay,
)
PAPER_GDAS_SECONDS = 28926.0  # NAS-Bench-201 paper, GDAS search on CIFAR-10 (one V100)
PAPER_EPOCHS, PAPER_SPLIT = 250, 25000
MEMORY_CASES = ("discrete", "gdas", "gdas_random", "darts", "snas")
CHILD_TAG = "BENCH_SEARCH_MEMORY "


@dataclass
class Settings:
    C: int
    N: int
    batch: int
    size: int
    num_classes: int
    random_archs: int
    fixed_archs: List[str]
    repeats: int
    warmup: int
    mode_repeats: int
    memory_iters: int
    throughput_iters: int
    throughput_images: int
    seed: int = 0


def settings_for(quick: bool, repeats: Optional[int]) -> Settings:
    if quick:
        s = Settings(
            C=4,
            N=1,
            batch=8,
            size=16,
            num_classes=10,
            random_archs=1,
            fixed_archs=["nor_conv_3x3"],
            repeats=3,
            warmup=1,
            mode_repeats=3,
            memory_iters=1,
            throughput_iters=2,
            throughput_images=64,
        )
    else:
        s = Settings(
            C=16,
            N=5,
            batch=64,
            size=32,
            num_classes=10,
            random_archs=8,
            fixed_archs=["nor_conv_3x3", "skip_connect"],
            repeats=7,
            warmup=2,
            mode_repeats=5,
            memory_iters=2,
            throughput_iters=20,
            throughput_images=PAPER_SPLIT,
        )
    if repeats is not None:
        s.repeats = s.mode_repeats = repeats
    return s


# ----------------------------------------------------------------------------------------------
# Machine, timing
# ----------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(
    fns: Dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int
) -> Dict[str, List[float]]:
    """Run every fn once per round, the order rotating each round (ABC, BCA, CAB, ...); seconds per fn."""
    names = list(fns)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            dt = timed(fns[name], device)
            if r >= warmup:
                times[name].append(dt)
    return times


def med(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of the per-round ratios a_i / b_i (cancels drifts slower than a round)."""
    return med([x / y for x, y in zip(a, b)])


def geomean(xs: Sequence[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


# ----------------------------------------------------------------------------------------------
# Models and steps
# ----------------------------------------------------------------------------------------------


def genotype_of(ops: Sequence[str]) -> Genotype:
    """The NB201 genotype with ``ops`` on edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2."""
    a, b, c, d, e, f = ops
    return Genotype.from_nb201(f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|")


def benchmark_archs(s: Settings) -> List[Genotype]:
    rng = random.Random(s.seed)
    archs = [genotype_of([rng.choice(NB201_OPS) for _ in range(6)]) for _ in range(s.random_archs)]
    return archs + [genotype_of([op] * 6) for op in s.fixed_archs]


def make_batch(s: Settings, device: torch.device, seed: int, channels_last: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(s.batch, 3, s.size, s.size, generator=g)
    y = torch.randint(0, s.num_classes, (s.batch,), generator=g)
    x = x.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device)


def supernet(s: Settings, mode: str, device: torch.device, seed: int = 0, channels_last: bool = False):
    torch.manual_seed(seed)
    net = build_supernet("nb201", mode, C=s.C, N=s.N, num_classes=s.num_classes).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    return net


def discrete(s: Settings, geno: Genotype, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    model = build_network(geno, C=s.C, N=s.N, num_classes=s.num_classes, affine=False).to(device)
    model.train()
    return model


def bias_logits(net, geno: Genotype) -> None:
    """Logits that make the gdas sample ``geno`` with near-certainty: 0 everywhere, +BIAS on the chosen ops."""
    choices = net.choices_from_genotype(geno)["normal"]
    a = net.arch["normal"]
    with torch.no_grad():
        a.zero_()
        a[torch.arange(len(choices)), torch.tensor(choices)] = BIAS


def weight_step_fn(model, params, x, y) -> Callable[[], torch.Tensor]:
    """One training step of ``params``: zero_grad, forward, CE, backward, clip 5, SGD."""
    opt = torch.optim.SGD(params, **W_OPT)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP, foreach=True)
        opt.step()
        return loss

    return step


def searcher_for(
    net, device: torch.device, bf16: bool = False, estimator: str = "st", cost: Optional[Sequence[int]] = None
) -> Searcher:
    """The search's optimisation state for ``net``, as the nb201_cifar10_gdas config builds it, at its
    first epoch; ``estimator``: ``search.estimator`` (``local`` compares in LOCAL_CONTEXT); ``cost``:
    an image's shape, for the budget recipe's cost term (FLOPs, ``target`` form at the uniform cost,
    stepped directly)."""
    penalty = None
    if cost is not None:
        table = cost_table(net, "flops", cost)
        reference = table.uniform({c: net.alive(c) for c in net.arch})
        penalty = CostPenalty(net, table, form="target", weight=10.0, budget=reference, step="direct")
    search = dataclasses.replace(SEARCH, estimator=estimator)
    searcher = Searcher.from_config(net, search, device=device, bf16=bf16, cost=penalty)
    if searcher.local:
        searcher.context = lambda: {"normal": list(LOCAL_CONTEXT)}
    searcher.start_epoch(0)  # tau 10, the weights' initial learning rate
    return searcher


def search_step_fn(
    net,
    device: torch.device,
    x_w,
    y_w,
    x_a,
    y_a,
    bf16: bool = False,
    estimator: str = "st",
    cost: Optional[Sequence[int]] = None,
) -> Callable[[], None]:
    """One search iteration as the search runs it (``Searcher.step``): weight step, then architecture step."""
    searcher = searcher_for(net, device, bf16, estimator, cost)
    batch_w, batch_a = (x_w, y_w), (x_a, y_a)

    def step() -> None:
        searcher.step(batch_w, batch_a)

    return step


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


def step_row(
    s: Settings, device: torch.device, x: torch.Tensor, y: torch.Tensor, i: int, geno: Genotype
) -> Dict[str, object]:
    """The step section's row of one architecture: forced, sampled, discrete and the A/A control."""
    net = supernet(s, "gdas", device, seed=i)
    weights = net.weight_parameters()
    bias_logits(net, geno)
    net.arch["normal"].requires_grad_(False)  # as Searcher.weight_step does
    expected = [op for op, _ in geno.normal]
    mismatches = [0]
    super_step = weight_step_fn(net, weights, x, y)

    def forced() -> None:
        with net.forced(geno):
            super_step()

    def sampled() -> None:
        super_step()
        if net.sampled_architecture()["normal"] != expected:
            mismatches[0] += 1

    model = discrete(s, geno, device, seed=i)
    disc_step = weight_step_fn(model, list(model.parameters()), x, y)
    # An A/A control: a second copy of the discrete network (the supernet's weights) doing
    # the same work; its ratio to the first shows the noise floor of this machine.
    copy = net.discretize(geno).train()
    copy_step = weight_step_fn(copy, list(copy.parameters()), x, y)
    times = interleaved(
        {"forced": forced, "sampled": sampled, "discrete": disc_step, "discrete_copy": copy_step},
        device,
        s.repeats,
        s.warmup,
    )
    m = {k: med(v) for k, v in times.items()}
    q = statistics.quantiles(times["discrete"], n=4) if len(times["discrete"]) >= 2 else [m["discrete"]] * 3
    return {
        "arch": geno.to_nb201(),
        "forced_ms": 1e3 * m["forced"],
        "sampled_ms": 1e3 * m["sampled"],
        "discrete_ms": 1e3 * m["discrete"],
        "ratio": m["forced"] / m["discrete"],
        "ratio_sampled": m["sampled"] / m["discrete"],
        "ratio_paired": paired_ratio(times["forced"], times["discrete"]),
        "ratio_sampled_paired": paired_ratio(times["sampled"], times["discrete"]),
        "aa_ratio": m["discrete_copy"] / m["discrete"],
        "discrete_iqr_rel": (q[2] - q[0]) / m["discrete"],
        "sample_mismatches": mismatches[0],
        "times_ms": {k: [round(1e3 * t, 3) for t in v] for k, v in times.items()},
    }


def bench_step(s: Settings, device: torch.device, log) -> Dict[str, object]:
    rows = []
    x, y = make_batch(s, device, seed=1)
    for i, geno in enumerate(benchmark_archs(s)):
        row = step_row(s, device, x, y, i, geno)  # its models are freed on return
        rows.append(row)
        log(
            f"step {i + 1}: {row['arch']}  forced {row['forced_ms']:.1f} ms, sampled {row['sampled_ms']:.1f} ms, "
            f"discrete {row['discrete_ms']:.1f} ms  ratio {row['ratio']:.3f} / {row['ratio_sampled']:.3f}  "
            f"(A/A {row['aa_ratio']:.3f})"
        )
        gc.collect()
    sampling = bench_sampling(s, device)
    log(
        f"sampling: {sampling['weight_step_us']:.1f} us per weight-step forward, "
        f"{sampling['arch_step_us']:.1f} us per arch-step forward"
    )
    summary = {
        "sampling_weight_step_us": sampling["weight_step_us"],
        "sampling_arch_step_us": sampling["arch_step_us"],
        "geomean_ratio": geomean([r["ratio"] for r in rows]),
        "geomean_ratio_sampled": geomean([r["ratio_sampled"] for r in rows]),
        "max_ratio": max(r["ratio"] for r in rows),
        "max_ratio_sampled": max(r["ratio_sampled"] for r in rows),
        "geomean_ratio_paired": geomean([r["ratio_paired"] for r in rows]),
        "geomean_ratio_sampled_paired": geomean([r["ratio_sampled_paired"] for r in rows]),
        "geomean_aa_ratio": geomean([r["aa_ratio"] for r in rows]),
        "max_abs_aa_deviation": max(abs(r["aa_ratio"] - 1) for r in rows),
        "target": 1.05,
    }
    return {"rows": rows, "summary": summary}


def bench_sampling(s: Settings, device: torch.device, calls: int = 2000) -> Dict[str, float]:
    """Median microseconds of drawing one forward's architecture (``net.sample_architecture()``, gdas mode).

    ``weight_step``: the logits frozen, as in the weight step (only the indices are needed);
    ``arch_step``: the logits require grad (the straight-through weights are built too).
    Includes the one host transfer of the sampled indices. Independent of C and N.
    """
    net = supernet(s, "gdas", device)
    out = {}
    for name, grad in (("weight_step", False), ("arch_step", True)):
        for a in net.arch_parameters():
            a.requires_grad_(grad)
        times = []
        for i in range(calls + 100):
            dt = timed(net.sample_architecture, device)
            if i >= 100:
                times.append(dt)
        out[f"{name}_us"] = 1e6 * med(times)
    for a in net.arch_parameters():
        a.requires_grad_(True)
    return out


def sync_sites(fn: Callable[[], object], device: torch.device) -> Optional[List[str]]:
    """Where ``fn()`` made synchronising CUDA calls (torch's sync debug mode): one
    ``file:line: message`` per call, or None where unsupported."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [
        f"{Path(w.filename).name}:{w.lineno}: {str(w.message).splitlines()[0][:160]}"
        for w in caught
        if "synchroniz" in str(w.message)
    ]


def bench_modes(s: Settings, device: torch.device, log) -> Dict[str, object]:
    x_w, y_w = make_batch(s, device, seed=1)
    x_a, y_a = make_batch(s, device, seed=2)
    fns = {}
    for mode in MODES:
        fns[mode] = search_step_fn(supernet(s, mode, device), device, x_w, y_w, x_a, y_a)
    # The architecture step's other estimators (search.estimator): rloo's 4 paths and local's one
    # edge at every op run forward only, in place of the straight-through forward and backward.
    variants = {
        f"gdas+{est}": search_step_fn(supernet(s, "gdas", device), device, x_w, y_w, x_a, y_a, estimator=est)
        for est in ("rloo", "local")
    }
    # The budget recipe's cost term: E and its direct step at every architecture step.
    image = (3, s.size, s.size)
    variants["gdas+cost"] = search_step_fn(supernet(s, "gdas", device), device, x_w, y_w, x_a, y_a, cost=image)
    if device.type == "cuda":  # bf16 autocast and channels_last variants of the gdas iteration
        xw_cl, _ = make_batch(s, device, seed=1, channels_last=True)
        xa_cl, _ = make_batch(s, device, seed=2, channels_last=True)
        variants["gdas+bf16"] = search_step_fn(supernet(s, "gdas", device), device, x_w, y_w, x_a, y_a, bf16=True)
        variants["gdas+channels_last"] = search_step_fn(
            supernet(s, "gdas", device, channels_last=True), device, xw_cl, y_w, xa_cl, y_a
        )
        variants["gdas+bf16+channels_last"] = search_step_fn(
            supernet(s, "gdas", device, channels_last=True), device, xw_cl, y_w, xa_cl, y_a, bf16=True
        )
    times = interleaved({**fns, **variants}, device, s.mode_repeats, s.warmup)
    gdas = med(times["gdas"])
    rows = []
    for name, ts in times.items():
        row = {
            "mode": name,
            "median_ms": 1e3 * med(ts),
            "gdas_speedup": med(ts) / gdas,
            "times_ms": [round(1e3 * t, 3) for t in ts],
        }
        if device.type == "cuda":
            # Twice: a first instrumented call can count a one-off (the first H200 run read 3 for
            # plain gdas, 2 for every variant); the second is the steady state. Both are kept.
            first = sync_sites({**fns, **variants}[name], device)
            steady = sync_sites({**fns, **variants}[name], device)
            row["syncs_per_iteration"] = len(steady)
            row["syncs_first_call"] = len(first)
            row["sync_sites"] = sorted(set(first + steady))
        rows.append(row)
        log(f"modes: {name} {row['median_ms']:.1f} ms (gdas is {row['gdas_speedup']:.2f}x faster)")
    return {
        "rows": rows,
        "summary": {
            "gdas_speedup_vs_darts": med(times["darts"]) / gdas,
            "gdas_speedup_vs_snas": med(times["snas"]) / gdas,
            "gdas_speedup_vs_darts_paired": 1.0 / paired_ratio(times["gdas"], times["darts"]),
            "target_vs_darts": 4.0,
        },
    }


def torch_pooling(net: nn.Module) -> int:
    """Swap every ``AvgPool3x3`` in ``net`` for torch's ``nn.AvgPool2d`` (the reference); how many."""
    swapped = 0
    for m in net.modules():
        if isinstance(m, Pool) and isinstance(m.pool, AvgPool3x3):
            m.pool = nn.AvgPool2d(3, stride=m.pool.stride, padding=1, count_include_pad=False)
            swapped += 1
    return swapped


def bench_pool(s: Settings, device: torch.device, log) -> Dict[str, object]:
    def op_step(pool: nn.Module, x: torch.Tensor, g: torch.Tensor) -> Callable[[], None]:
        def step() -> None:
            x.grad = None
            pool(x).backward(g)

        return step

    fns, pairs = {}, []
    for stage in range(3):  # the three stages' shapes (channels double, resolution halves)
        C, H = s.C * 2**stage, max(1, s.size // 2**stage)
        x = torch.randn(s.batch, C, H, H, device=device, requires_grad=True)
        g = torch.randn(s.batch, C, H, H, device=device)
        label = f"op {s.batch}x{C}x{H}x{H}"
        fns[label + " torch"] = op_step(nn.AvgPool2d(3, 1, 1, count_include_pad=False), x, g)
        fns[label + " ours"] = op_step(AvgPool3x3(1), x, g)
        pairs.append(label)
    sizes = [(s.C, s.N)] + (
        [] if (CPU_SUPERNET.C, CPU_SUPERNET.N) == (s.C, s.N) else [(CPU_SUPERNET.C, CPU_SUPERNET.N)]
    )
    x_w, y_w = make_batch(s, device, seed=1)
    x_a, y_a = make_batch(s, device, seed=2)
    for C, N in sizes:
        sized = Settings(**{**asdict(s), "C": C, "N": N})
        for mode in ("darts", "gdas"):
            label = f"{mode} iteration C={C} N={N}"
            reference = supernet(sized, mode, device)
            assert torch_pooling(reference) == 6 * 3 * N  # one per edge: 6 edges, 3 stages of N cells
            fns[label + " torch"] = search_step_fn(reference, device, x_w, y_w, x_a, y_a)
            fns[label + " ours"] = search_step_fn(supernet(sized, mode, device), device, x_w, y_w, x_a, y_a)
            pairs.append(label)
    times = interleaved(fns, device, s.mode_repeats, s.warmup)
    rows = []
    for label in pairs:
        theirs, ours = times[label + " torch"], times[label + " ours"]
        row = {
            "case": label,
            "torch_ms": 1e3 * med(theirs),
            "ours_ms": 1e3 * med(ours),
            "speedup_paired": paired_ratio(theirs, ours),
        }
        rows.append(row)
        log(
            f"pool: {label}: torch {row['torch_ms']:.2f} ms, ours {row['ours_ms']:.2f} ms ({row['speedup_paired']:.2f}x)"
        )
    return {
        "rows": rows,
        "summary": {r["case"].replace(" ", "_") + "_speedup": r["speedup_paired"] for r in rows},
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def status_bytes(field: str) -> Optional[int]:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in bytes; None where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to its current RSS (Linux >= 4.0).

    Needed because ru_maxrss is inherited: the kernel carries the parent's high-water
    mark through fork and exec, so a child started by a benchmark that has already
    held gigabytes reports those gigabytes as its own peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(case: str, s: Settings, device: torch.device) -> Dict[str, object]:
    """Run in a fresh process: build the case's model and data, then measure ``memory_iters`` steps."""
    geno = genotype_of(["nor_conv_3x3"] * 6)
    x_w, y_w = make_batch(s, device, seed=1)
    x_a, y_a = make_batch(s, device, seed=2)
    if case == "discrete":
        model = discrete(s, geno, device)
        step = weight_step_fn(model, list(model.parameters()), x_w, y_w)
        what = f"discrete {geno.to_nb201()} weight step"
        label = "discrete all-nor_conv_3x3, weight step"
    else:
        mode = "gdas" if case.startswith("gdas") else case
        net = supernet(s, mode, device)
        if case == "gdas":
            bias_logits(net, geno)
            what = f"gdas search iteration, sampled path of {geno.to_nb201()}"
            label = "gdas search iteration, sampling all-nor_conv_3x3"
        else:
            what = f"{mode} search iteration" + (", random samples at initial logits" if mode == "gdas" else "")
            label = what
        step = search_step_fn(net, device, x_w, y_w, x_a, y_a)
    gc.collect()
    out: Dict[str, object] = {"case": case, "label": label, "what": what, "iters": s.memory_iters}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for _ in range(s.memory_iters):
            step()
        sync(device)
        out.update(
            kind="cuda max_memory_allocated - allocated before",
            peak_bytes=torch.cuda.max_memory_allocated(device) - before,
            baseline_bytes=before,
        )
    else:
        reset = reset_peak_rss()
        before = rss_bytes()
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
        hwm_before = status_bytes("VmHWM")
        for _ in range(s.memory_iters):
            step()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        hwm = status_bytes("VmHWM")
        if reset and hwm is not None:
            kind, peak = "peak RSS (VmHWM, reset before the first step) - RSS before the first step", hwm
        else:
            kind, peak = "ru_maxrss - RSS before the first step", maxrss
        out.update(
            kind=kind,
            peak_bytes=peak - before,
            baseline_bytes=before,
            vmhwm_before_bytes=hwm_before,
            vmhwm_bytes=hwm,
            maxrss_before_bytes=maxrss_before,
            maxrss_bytes=maxrss,
            # An earlier high-water mark (inherited or from model building) would hide the step's.
            baseline_peak_dominates=peak <= (hwm_before if reset and hwm_before else maxrss_before),
        )
    return out


def bench_memory(s: Settings, device: torch.device, quick: bool, log) -> Dict[str, object]:
    rows = []
    base = [
        sys.executable,
        "-m",
        "experiments.bench_search",
        "--device",
        device.type,
        "--threads",
        str(torch.get_num_threads()),
    ] + (["--quick"] if quick else [])
    # A process's peak memory does not depend on what runs beside it, so --quick starts
    # its children at once (they are import-bound); a full run starts them one by one.
    parallel = quick and device.type == "cpu"
    # CPU: glibc's default allocator, then a fixed mmap threshold (see the module docstring);
    # --quick, whose children are mostly import time, measures the second only.
    allocators = {"default": None, "mmap_threshold_128k": "131072"} if device.type == "cpu" else {"cuda": None}
    if quick and device.type == "cpu":
        allocators.pop("default")
    jobs = [(alloc, case) for alloc in allocators for case in MEMORY_CASES]
    procs: Dict[tuple, subprocess.Popen] = {}
    outputs: Dict[tuple, tuple] = {}
    for alloc, case in jobs:
        env = dict(os.environ)
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
        if allocators[alloc] is not None:
            env["MALLOC_MMAP_THRESHOLD_"] = allocators[alloc]
        procs[alloc, case] = subprocess.Popen(
            base + ["--_memory-child", case],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
            env=env,
        )
        if not parallel:
            outputs[alloc, case] = procs[alloc, case].communicate() + (procs[alloc, case].returncode,)
    for job, proc in procs.items():
        if job not in outputs:
            outputs[job] = proc.communicate() + (proc.returncode,)
    by: Dict[str, Dict[str, int]] = {alloc: {} for alloc in allocators}
    for alloc, case in jobs:
        stdout, stderr, code = outputs[alloc, case]
        lines = [ln for ln in stdout.splitlines() if ln.startswith(CHILD_TAG)]
        if code != 0 or not lines:
            raise RuntimeError(f"memory child {case!r} ({alloc}) failed (exit {code}):\n{stderr[-4000:]}")
        row = json.loads(lines[-1][len(CHILD_TAG) :])
        row["allocator"] = alloc
        row["peak_mib"] = row["peak_bytes"] / 2**20
        rows.append(row)
        by[alloc][case] = row["peak_bytes"]
        log(f"memory: {case} ({alloc}) {row['peak_mib']:.1f} MiB")
    for r in rows:
        r["vs_discrete"] = r["peak_bytes"] / by[r["allocator"]]["discrete"]
    main_alloc = list(allocators)[-1]
    summary: Dict[str, object] = {"allocator": main_alloc, "target": 1.15}
    for alloc in allocators:
        suffix = "" if alloc == main_alloc else f"_{alloc}_allocator"
        for case in ("gdas", "gdas_random", "darts", "snas"):
            summary[f"{case}_over_discrete{suffix}"] = by[alloc][case] / by[alloc]["discrete"]
    return {"rows": rows, "summary": summary}


def bench_throughput(s: Settings, device: torch.device, log) -> Dict[str, object]:
    g = torch.Generator().manual_seed(s.seed)
    n = s.throughput_images
    images = [torch.randint(0, 256, (n, 3, s.size, s.size), dtype=torch.uint8, generator=g) for _ in range(2)]
    labels = [torch.randint(0, s.num_classes, (n,), generator=g) for _ in range(2)]
    # Normalised by the images' own per-channel statistics (random images: any values cost the same).
    flat = images[0].float().div(255).transpose(0, 1).reshape(3, -1)
    mean, std = tuple(flat.mean(1).tolist()), tuple(flat.std(1).tolist())
    loaders = [
        BatchLoader(
            images[k],
            labels[k],
            s.batch,
            mean=mean,
            std=std,
            augment=True,
            shuffle=True,
            drop_last=True,
            seed=s.seed + k,
            device=device,
        )
        for k in range(2)
    ]
    feed = "nas.data.BatchLoader (augment, shuffle)"
    net = supernet(s, "gdas", device)
    searcher = searcher_for(net, device)
    iters = min(s.throughput_iters, len(loaders[0]) - 1)
    per_iter: List[float] = []
    sync(device)
    start = last = None
    for i, ((x_w, y_w), (x_a, y_a)) in enumerate(zip(*loaders)):
        if i == 1:  # iteration 0 is the warm-up
            sync(device)
            start = last = time.perf_counter()
        searcher.step((x_w, y_w), (x_a, y_a))
        if i >= 1:
            if device.type == "cuda" and i == iters:
                sync(device)
            now = time.perf_counter()
            per_iter.append(now - last)
            last = now
        if i >= iters:
            break
    sync(device)
    total = time.perf_counter() - start
    t_iter = total / iters
    iters_per_epoch = PAPER_SPLIT // 64  # drop_last, batch 64
    est = PAPER_EPOCHS * iters_per_epoch * t_iter
    out = {
        "feed": feed,
        "iterations": iters,
        "batch": s.batch,
        "seconds": total,
        "seconds_per_iteration": t_iter,
        "median_iteration_s": med(per_iter) if device.type != "cuda" else None,
        "images_per_second": 2 * s.batch * iters / total,
        "estimated_full_search_s": est,
        "estimated_full_search_h": est / 3600,
        "estimate": f"{PAPER_EPOCHS} epochs x {iters_per_epoch} iterations x {t_iter:.3f} s",
        "paper_gdas_s": PAPER_GDAS_SECONDS,
        "paper_device": "one NVIDIA V100 GPU (NAS-Bench-201 paper)",
        "vs_paper": est / PAPER_GDAS_SECONDS,
    }
    log(
        f"throughput: {out['images_per_second']:.1f} img/s, "
        f"estimated full search {out['estimated_full_search_h']:.1f} h"
    )
    return out


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def table(res: Dict[str, object]) -> str:
    lines = []
    m = res["machine"]
    lines.append(
        f"bench_search  device {m['device']} ({m['device_name']}), {m['cpu_count']} CPUs, "
        f"torch {m['torch']} ({m['torch_threads']} threads)  settings C={res['settings']['C']} "
        f"N={res['settings']['N']} batch={res['settings']['batch']} {res['settings']['size']}px"
    )
    if "step" in res:
        lines.append("")
        lines.append(
            f"{'weight step: architecture':<96} {'forced':>9} {'sampled':>9} {'discrete':>9} "
            f"{'ratio':>6} {'smpl':>6} {'A/A':>6}"
        )
        for r in res["step"]["rows"]:
            lines.append(
                f"{r['arch']:<96} {r['forced_ms']:>7.1f}ms {r['sampled_ms']:>7.1f}ms "
                f"{r['discrete_ms']:>7.1f}ms {r['ratio']:>6.3f} {r['ratio_sampled']:>6.3f} "
                f"{r['aa_ratio']:>6.3f}"
            )
        sm = res["step"]["summary"]
        lines.append(
            f"{'geometric mean':<96} {'':>9} {'':>9} {'':>9} {sm['geomean_ratio']:>6.3f} "
            f"{sm['geomean_ratio_sampled']:>6.3f} {sm['geomean_aa_ratio']:>6.3f}"
        )
        lines.append(
            f"max ratio forced {sm['max_ratio']:.3f}, sampled {sm['max_ratio_sampled']:.3f} (target <= 1.05); "
            f"paired geomean {sm['geomean_ratio_paired']:.3f} / {sm['geomean_ratio_sampled_paired']:.3f}; "
            f"A/A control off by up to {100 * sm['max_abs_aa_deviation']:.1f}% (the noise floor)"
        )
        lines.append(
            f"drawing the architecture (gdas sample_architecture): {sm['sampling_weight_step_us']:.1f} us "
            f"per weight-step forward, {sm['sampling_arch_step_us']:.1f} us per arch-step forward"
        )
    if "modes" in res:
        lines.append("")
        lines.append(f"{'search iteration (weight + arch step)':<40} {'median':>11} {'x gdas':>8} {'syncs':>6}")
        for r in res["modes"]["rows"]:
            syncs = r.get("syncs_per_iteration")
            lines.append(
                f"{r['mode']:<40} {r['median_ms']:>9.1f}ms {r['gdas_speedup']:>8.2f} "
                f"{'' if syncs is None else syncs:>6}"
            )
        sm = res["modes"]["summary"]
        lines.append(
            f"gdas speedup: {sm['gdas_speedup_vs_darts']:.2f}x vs darts (target >= 4), "
            f"{sm['gdas_speedup_vs_snas']:.2f}x vs snas"
        )
    if "pool" in res:
        lines.append("")
        lines.append(f"{'3x3 average pooling, forward + backward':<40} {'torch':>11} {'ours':>11} {'speedup':>8}")
        for r in res["pool"]["rows"]:
            lines.append(f"{r['case']:<40} {r['torch_ms']:>9.2f}ms {r['ours_ms']:>9.2f}ms {r['speedup_paired']:>7.2f}x")
    if "memory" in res:
        lines.append("")
        lines.append(f"{'peak memory (own process)':<64} {'allocator':<20} {'MiB':>9} {'/disc':>6}")
        for r in res["memory"]["rows"]:
            lines.append(
                f"{r['label']:<64} {r.get('allocator', ''):<20} {r['peak_mib']:>9.1f} {r['vs_discrete']:>6.2f}"
            )
        sm = res["memory"]["summary"]
        lines.append(
            f"gdas / discrete: {sm['gdas_over_discrete']:.3f} with allocator {sm.get('allocator')} "
            "(target <= 1.15)"
            + "".join(
                f"; {sm[k]:.3f} {k[len('gdas_over_discrete_') :]}" for k in sm if k.startswith("gdas_over_discrete_")
            )
        )
    if "throughput" in res:
        t = res["throughput"]
        lines.append("")
        lines.append(
            f"throughput: {t['images_per_second']:.1f} img/s ({t['iterations']} iterations, "
            f"{t['seconds_per_iteration']:.3f} s each, {t['feed']})"
        )
        lines.append(
            f"full nb201_cifar10_gdas search estimate: {t['estimate']} = {t['estimated_full_search_s']:.0f} s "
            f"({t['estimated_full_search_h']:.1f} h) = {t['vs_paper']:.1f}x the paper's "
            f"{t['paper_gdas_s']:.0f} s on one V100"
            + ("  [--quick: tiny setting, not the real cost]" if res["quick"] else "")
        )
    if "before" in res:
        lines.append("")
        lines.append(f"before (from {res['before'].get('source')}): " + json.dumps(res["before"].get("summary")))
    return "\n".join(lines)


def summaries(res: Dict[str, object]) -> Dict[str, object]:
    out = {}
    for k in SECTIONS:
        if k in res:
            out[k] = (
                res[k]["summary"]
                if "summary" in res[k]
                else {
                    kk: res[k][kk] for kk in ("images_per_second", "seconds_per_iteration", "estimated_full_search_s")
                }
            )
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny setting (C=4, N=1, batch 8, 16px), few repeats, memory with one allocator",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (step, modes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ",".join(SECTIONS))
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: every core, os.cpu_count(); --quick: 1)"
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="an earlier JSON of this benchmark whose summaries are kept as 'before'",
    )
    parser.add_argument("--_memory-child", dest="memory_child", choices=MEMORY_CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in only if x not in SECTIONS]
    if bad or not only:
        parser.error(f"--only: unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    try:
        device = resolve_device(args.device)
    except UserError as exc:
        parser.error(f"--device {args.device}: {exc}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    # Every core by default. --quick uses one thread: its tiny ops are all synchronisation
    # when the cores are shared with other jobs (one step took 1.2 s with 2 threads, 10 ms with 1).
    threads = args.threads if args.threads is not None else (1 if args.quick else os.cpu_count() or 1)
    set_cpu_threads(threads)
    s = settings_for(args.quick, args.repeats)

    if args.memory_child:
        print(CHILD_TAG + json.dumps(memory_child(args.memory_child, s, device)), flush=True)
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    res: Dict[str, object] = {
        "benchmark": "bench_search",
        "command": command_line() if argv is None else "bench_search.main(" + " ".join(argv) + ")",
        "machine": machine(device),
        "device": device.type,
        "settings": asdict(s),
        "quick": args.quick,
    }
    t0 = time.perf_counter()
    if "step" in only:
        res["step"] = bench_step(s, device, log)
    if "modes" in only:
        res["modes"] = bench_modes(s, device, log)
    if "pool" in only:
        res["pool"] = bench_pool(s, device, log)
    if "memory" in only:
        res["memory"] = bench_memory(s, device, args.quick, log)
    if "throughput" in only:
        res["throughput"] = bench_throughput(s, device, log)
    res["summary"] = summaries(res)
    res["wall_seconds"] = time.perf_counter() - t0
    try:
        res["machine"]["load_average_at_end"] = list(os.getloadavg())
    except OSError:
        pass
    if args.before is not None:
        old = json.loads(args.before.read_text())
        res["before"] = {
            "source": str(args.before),
            "machine": old.get("machine"),
            "summary": old.get("summary"),
            "step_rows": [
                {k: r[k] for k in ("arch", "forced_ms", "sampled_ms", "discrete_ms", "ratio", "ratio_sampled")}
                for r in old.get("step", {}).get("rows", [])
            ],
        }
    res.update(git_state())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    log(f"wrote {args.out}")
    print(table(res))  # last
    return 0


if __name__ == "__main__":
    sys.exit(main())
