"""Does averaging the supernet's weights (SWA) rank a budget's window better than its last weights?

A one-off screen of a budgeted search's checkpoint (experiments/README.md, section 15). Every op
but ``none`` is made alive again and the weights are trained for EPOCHS epochs of uniform paths
(the search's weight step, its optimiser state, constant learning rate LR), keeping the running
mean of the weights after each step. Kendall's tau between the supernet's loss and the benchmark
over the window's cells (the window study's measurement: 8 fixed batches of 64 architecture-split
images, training mode) before, after the training (raw) and with the averaged weights (swa).

    PYTHONPATH=. python experiments/frozen/swa_screen.py CHECKPOINT OUT.json EPOCHS LR
"""

import json
import sys
import time
from pathlib import Path

import torch

from experiments.rerank_study import fixed_batches, load_task
from experiments.stats import kendall_tau_b
from experiments.window_study import supernet_loss, window_cells
from nas.benchmarks import cell_string, load_benchmark
from nas.training import set_lr

torch.set_num_threads(1)
path, out, epochs, lr = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ckpt, task = load_task(path)
net, cfg, searcher = task.net, task.cfg, task.searcher
cell, ops, cells, window = window_cells(path, task)
fixed = fixed_batches(cfg, 8, 64)
bench = load_benchmark()
values = [bench.query(cell_string([ops[k] for k in c])) for c, _ in cells]


def measure(tag):
    net.train()
    t = time.time()
    losses = [supernet_loss(net, cell, c, fixed)[0] for c, _ in cells]
    i = min(range(len(cells)), key=losses.__getitem__)
    r = {"tau": kendall_tau_b([-x for x in losses], values), "lowest": values[i], "best": max(values)}
    print(tag, r, f"{time.time() - t:.0f} s", flush=True)
    return r


res = {"ckpt": str(path), "epochs": epochs, "lr": lr, "before": measure("before")}
with torch.no_grad():  # every op but none trains again, uniformly
    alive = net.alive(cell)
    alive.fill_(True)
    alive[:, ops.index("none")] = False
net._alive_cache = None
searcher.uniform_weight_paths = True
params = list(net.weight_parameters())
avg = [p.detach().clone() for p in params]
n = 1
set_lr(searcher.weight_optimizer, lr)
for ep in range(epochs):
    task.loader_w.set_epoch(ckpt["epoch"] + ep)
    for x, y in task.loader_w:
        searcher.weight_step(x, y)
        n += 1
        with torch.no_grad():
            for s, p in zip(avg, params):
                s.add_((p - s) / n)
res["raw"] = measure("raw")
with torch.no_grad():
    for s, p in zip(avg, params):
        p.copy_(s)
res["swa"] = measure("swa")
out.write_text(json.dumps(res, indent=1))
