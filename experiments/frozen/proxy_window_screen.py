"""Does a cell trained alone at the search's scale rank a budget's window better than the supernet?

A one-off screen (experiments/README.md, section 15). K cells drawn at random (seed 0) from the
window a search at BUDGET may derive: the none-free cells whose supernet FLOPs (C=8, N=2) lie within
10% of the budget, chosen by FLOPs alone (window_odds's window). Each is trained alone with section
15's standalone command (C=8, N=2, 20k images, batch 64, SGD 0.05 cosine, EPOCHS epochs, run.seed
0, the CIFAR-10 test set), two at a time at one thread. Only after every training has ended are the
cells looked up: Kendall's tau between their test accuracy and the benchmark's, and the gap to the
front of the cell the proxy ranks first.

    PYTHONPATH=. python experiments/frozen/proxy_window_screen.py BUDGET K EPOCHS RUNS_DIR OUT.json
"""

import json
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from experiments import nb201_cost_front as front_mod
from experiments.machine import write_record
from experiments.nb201_cost_sweep import front_data
from experiments.stats import kendall_tau_b
from experiments.window_odds import TOLERANCE, searched_costs
from nas.benchmarks import cell_string, load_benchmark
from nas.cost import architectures_within, budget_window

budget, k, epochs = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
runs, out = Path(sys.argv[4]), Path(sys.argv[5])
costs, ops = searched_costs()
(cell,) = list(costs.costs)
use = [j for j, o in enumerate(ops) if o != "none"]
cap, floor = budget_window(budget, TOLERANCE, "target")
window = architectures_within(costs, {cell: [use] * costs.costs[cell].shape[0]}, cap, floor, limit=15625)
picked = [cell_string([ops[j] for j in a[cell]]) for a in random.Random(0).sample(window, k)]
COMMAND = (
    "python search.py retrain --genotype CELL --config configs/nb201_cifar10_cpu.yaml --set run.seed=0 "
    "--set data.train_subset=20000 --set retrain.nb201.C=8 --set retrain.nb201.N=2 "
    f"--set retrain.nb201.epochs={epochs} --set retrain.nb201.batch_size=64 --set retrain.nb201.lr=0.05 "
    "--set run.threads=1 --set data.verify_md5=false --quiet --out RUN"
)


def train(i: int) -> dict:
    run = runs / f"cell{i}"
    args = COMMAND.replace("CELL", "@").replace("RUN", str(run)).split()
    args[args.index("@")] = picked[i]
    t = time.time()
    done = subprocess.run([sys.executable, *args[1:]], capture_output=True, text=True)
    minutes = (time.time() - t) / 60
    if done.returncode != 0:
        return {"cell": picked[i], "error": done.stderr[-2000:], "minutes": minutes}
    result = json.loads((run / "result.json").read_text())
    return {"cell": picked[i], "proxy": result["test_acc"], "minutes": minutes}


t0 = time.time()
with ThreadPoolExecutor(2) as pool:
    rows = list(pool.map(train, range(k)))
# Read only now, after every training has ended.
bench, front = load_benchmark(), front_data()
for r in rows:
    r["benchmark"] = bench.query(r["cell"])
    names = [o.split("~")[0] for o in r["cell"].replace("+", "").strip("|").split("|") if o]
    flops = front_mod.cell_flops(names, front["table"], front["op_names"])
    r["gap"] = front_mod.gap_to_front(front["points"], flops, r["benchmark"])
ok = [r for r in rows if "proxy" in r]
top = max(ok, key=lambda r: r["proxy"])
summary = {
    "budget": budget,
    "window_cells": len(window),
    "cells": len(ok),
    "epochs": epochs,
    "kendall_tau": kendall_tau_b([r["proxy"] for r in ok], [r["benchmark"] for r in ok]),
    "proxy_first": top,
    "best_in_sample": max(ok, key=lambda r: r["benchmark"]),
    "minutes": (time.time() - t0) / 60,
}
print(json.dumps(summary, indent=1))
write_record(
    out,
    {
        "experiment": "proxy_window_screen",
        "command": " ".join(sys.argv),
        "command_per_cell": COMMAND,
        "summary": summary,
        "rows": rows,
    },
)
