"""The house rules of the package: the Searcher object, the run skeleton, validation at the
boundary, one Ctrl-C handler, the library never importing the command line, packaging."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nas
from nas.cli import main
from nas.config import Config, load_config, validate
from nas.run import open_run, run_epochs
from nas.runtime import find_config, packaged_config
from nas.searcher import Searcher

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nas"


# ---- the library never imports the command line -------------------------------------------
def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")


@pytest.mark.parametrize(
    # cli.py is the command line, __main__.py its `python -m nas` entry point
    "path",
    sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name not in ("cli.py", "__main__.py")),
)
def test_library_modules_import_neither_argparse_nor_the_cli(path):
    names = set(_imports(PACKAGE / path))
    assert "argparse" not in names, path
    assert not any(n.endswith("cli") and n.lstrip(".") in ("cli", "nas.cli") for n in names), path


def _package_imports() -> dict:
    """Module -> the package modules it imports anywhere: at the top, inside functions (run time)
    and through ``import_module(f"{__package__}.name")``; annotations-only imports excluded."""
    modules = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if f.name == "__init__.py" else parts)] = f
    graph = {}
    for name, f in modules.items():
        pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(f.read_text())
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        found = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = pkg
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                mod = f"{base}.{node.module}" if node.level and node.module else base if node.level else node.module
                found |= {f"{mod}.{a.name}" for a in node.names} | ({mod} if node.module else set())
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module"):
                found |= {m for m in modules if f".{m.rsplit('.', 1)[-1]}" in ast.unparse(node)}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_loop_counting_imports_made_at_run_time():
    graph = _package_imports()
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import loop: " + " -> ".join(path[path.index(m) :] + [m]))
        if m in done:
            return
        path.append(m)
        for n in sorted(graph[m]):
            if n != "nas":  # the package's __init__ imports its modules; they never import it back
                visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
    assert not any("nas" in deps for m, deps in graph.items() if m != "nas"), "a module imports the package"


def test_genotype_is_a_value_that_imports_no_registry():
    assert _package_imports()["nas.genotype"] <= {"nas.errors"}


def test_importing_the_library_runs_nothing_and_leaves_the_cli_unloaded():
    code = (
        "import sys, nas, nas.search, nas.retrain, nas.report, nas.data, nas.searcher, nas.run; "
        "assert 'nas.cli' not in sys.modules"
    )  # (torch itself imports argparse)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_user_error_is_a_value_error():
    assert issubclass(nas.UserError, ValueError)
    with pytest.raises(ValueError):
        load_config(None, ["search.epochs=zero"])


# ---- the Searcher --------------------------------------------------------------------------
def _tiny_searcher(**kw):
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", "gdas", C=4, N=1, num_classes=3)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.05)
    return net, Searcher(net, w_opt, a_opt, epochs=4, **kw)


def test_searcher_step_is_a_weight_step_then_an_arch_step_by_hand():
    x_w, y_w = torch.randn(6, 3, 8, 8), torch.randint(0, 3, (6,))
    x_a, y_a = torch.randn(6, 3, 8, 8), torch.randint(0, 3, (6,))
    net, searcher = _tiny_searcher(grad_clip=5.0)
    searcher.start_epoch(0)
    torch.manual_seed(7)
    searcher.step((x_w, y_w), (x_a, y_a))

    twin, _ = _tiny_searcher()
    w_opt = torch.optim.SGD(twin.weight_parameters(), lr=0.1, momentum=0.9)
    a_opt = torch.optim.Adam(twin.arch_parameters(), lr=0.05)
    torch.manual_seed(7)
    for a in twin.arch_parameters():
        a.requires_grad_(False)
    w_opt.zero_grad()
    F.cross_entropy(twin(x_w), y_w).backward()
    for a in twin.arch_parameters():
        a.requires_grad_(True)
    torch.nn.utils.clip_grad_norm_(twin.weight_parameters(), 5.0)
    w_opt.step()
    a_opt.zero_grad()
    F.cross_entropy(twin(x_a), y_a).backward(inputs=twin.arch_parameters())
    a_opt.step()

    for (name, p), q in zip(net.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(p, q), name
    assert searcher.train_meter.count == 6 and searcher.val_meter.count == 6


def test_searcher_arch_step_leaves_weights_without_gradient_and_warmup_leaves_logits():
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    net, searcher = _tiny_searcher()
    searcher.start_epoch(0)
    before = net.arch["normal"].detach().clone()
    searcher.step((x, y), arch_step=False)
    assert torch.equal(net.arch["normal"], before)
    assert searcher.val_meter.count == 0
    grads = [None if p.grad is None else p.grad.clone() for p in net.weight_parameters()]  # the weight step's
    searcher.arch_step(x, y)
    assert not torch.equal(net.arch["normal"], before)
    # backward(inputs=arch): the architecture step computes no weight gradient
    for p, g in zip(net.weight_parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert any(g is not None for g in grads)
    with pytest.raises(ValueError, match="batch_a"):
        searcher.step((x, y), None, arch_step=True)
    logits = net.arch["normal"].detach().clone()
    searcher.step((x, y))  # no architecture batch: a weight step alone
    assert torch.equal(net.arch["normal"], logits)


def test_searcher_start_epoch_applies_the_schedules_and_resets_the_meters():
    net, searcher = _tiny_searcher(
        tau_at=lambda e, n: 10.0 - e, lr_at=lambda e: 0.5 / (e + 1), beta_decay_at=lambda e: 0.25 * e
    )
    searcher.start_epoch(0)
    searcher.step((torch.randn(2, 3, 8, 8), torch.tensor([0, 1])), arch_step=False)
    searcher.start_epoch(3)
    assert net.tau == 7.0 and searcher.lr == 0.125 and searcher.beta_decay == 0.75
    assert searcher.weight_optimizer.param_groups[0]["lr"] == 0.125
    assert searcher.train_meter.count == 0


def test_searcher_from_config_matches_the_config():
    cfg = load_config(
        None,
        ["search.weights.lr=0.2", "search.arch.lr=0.01", "search.epochs=10", "search.tau.max=4", "search.tau.min=1"],
    )
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    searcher = Searcher.from_config(net, cfg.search)
    assert isinstance(searcher.weight_optimizer, torch.optim.SGD)
    assert searcher.arch_optimizer.param_groups[0]["lr"] == 0.01
    searcher.start_epoch(0)
    assert (net.tau, searcher.lr) == (4.0, 0.2)
    searcher.start_epoch(9)
    assert net.tau == pytest.approx(1.0) and 0.001 < searcher.lr < 0.2  # the last epoch reaches tau.min


# ---- the run skeleton ----------------------------------------------------------------------
class CountingTask:
    """A toy task: one parameter, three steps per epoch, a loss that can be made NaN."""

    kind = "toy"
    logs = ("metrics.jsonl",)
    nan_hint = "lower toy.lr"

    def __init__(self, epochs: int, nan_at: int = -1):
        self.epochs, self.nan_at = epochs, nan_at
        self.w = torch.zeros(())

    def state_dict(self):
        return {"w": self.w.clone()}

    def load_state_dict(self, ckpt):
        self.w = ckpt["w"].clone()

    def start_epoch(self, epoch):
        self.epoch, self.total = epoch, 0.0
        return 3

    def batches(self):
        return iter(range(10))  # more batches than steps: the skeleton stops at 3

    def step(self, batch):
        self.w += torch.rand(())  # consumes the global RNG, which a resume must restore
        self.total += 1

    def postfix(self):
        return {}

    def end_epoch(self, epoch, seconds):
        loss = float("nan") if epoch == self.nan_at else float(self.w)
        return {"epoch": epoch + 1, "train_loss": loss, "steps": self.total}

    def write_outputs(self, run_dir, epoch, metrics):
        (run_dir / "last.txt").write_text(str(epoch))

    def describe(self, epoch, metrics):
        return f"epoch {epoch + 1}"


def _toy_run(run_dir: Path, epochs: int, resume: bool = False, stop_after=None, nan_at: int = -1):
    cfg = Config()
    ckpt = open_run(run_dir, cfg, "toy", resume)
    return run_epochs(
        lambda: CountingTask(epochs, nan_at),
        cfg,
        run_dir,
        ckpt,
        desc="toy",
        stop_after=stop_after,
        progress=False,
        log=lambda s: None,
    )


def test_run_skeleton_stops_resumes_exactly_and_truncates_the_logs(tmp_path):
    whole, whole_done = _toy_run(tmp_path / "whole", 4)
    assert whole_done.finished and whole_done.done == 4 and whole_done.last_metrics["steps"] == 3
    _, first = _toy_run(tmp_path / "split", 4, stop_after=2)
    assert (first.start, first.done, first.finished) == (0, 2, False)
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:  # an interrupted epoch's line
        f.write(json.dumps({"epoch": 3, "train_loss": -1.0}) + "\n")
    split, rest = _toy_run(tmp_path / "split", 4, resume=True)
    assert (rest.start, rest.done, rest.finished) == (2, 4, True)
    assert torch.equal(split.w, whole.w)
    assert (tmp_path / "split" / "metrics.jsonl").read_text() == (tmp_path / "whole" / "metrics.jsonl").read_text()
    ckpt = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert ckpt["kind"] == "toy" and ckpt["epoch"] == 4 and (tmp_path / "split" / "last.txt").read_text() == "4"


def test_run_skeleton_frees_the_folder_of_a_run_that_failed_while_building(tmp_path):
    """Any failure before the first epoch (a refusal, a bug, Ctrl-C) leaves no run behind, so the
    same folder starts again; a run stopped inside its first epoch is named as such, not looped
    between "already holds a run" and "no checkpoint"."""
    run_dir = tmp_path / "r"

    def broken():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        run_epochs(broken, Config(), run_dir, open_run(run_dir, Config(), "toy", False), desc="toy", progress=False)
    assert not (run_dir / "config.yaml").exists()
    _toy_run(run_dir, 1)  # the same folder
    # The folders the failed run created go with it; a parent another run has written to since stays,
    # and so does a folder that was there before, with what it held.
    nested = tmp_path / "new" / "deeper" / "run"
    ckpt = open_run(nested, Config(), "toy", False)
    (tmp_path / "new" / "other.txt").write_text("another run's")
    with pytest.raises(RuntimeError):
        run_epochs(broken, Config(), nested, ckpt, desc="toy", progress=False)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["other.txt"]
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        run_epochs(broken, Config(), kept, open_run(kept, Config(), "toy", False), desc="toy", progress=False)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
    _toy_run(kept, 1)
    with pytest.raises(nas.UserError, match="already holds a run"):  # begun: a later failure keeps it
        run_epochs(broken, Config(), kept, open_run(kept, Config(), "toy", False), desc="toy", progress=False)
    assert (kept / "checkpoint.pt").exists()
    # A failure inside the first epoch (here the loss turns NaN) keeps nothing either; one after an epoch
    # was checkpointed keeps the run, to resume.
    with pytest.raises(nas.UserError, match="training loss became nan in epoch 1"):
        _toy_run(tmp_path / "nan" / "first", 3, nan_at=0)
    assert not (tmp_path / "nan").exists()
    with pytest.raises(nas.UserError, match="training loss became nan in epoch 2"):
        _toy_run(tmp_path / "nan" / "second", 3, nan_at=1)
    assert (tmp_path / "nan" / "second" / "checkpoint.pt").exists()
    stopped = tmp_path / "stopped"
    open_run(stopped, Config(), "toy", False)  # config.yaml written; say the process died in epoch 1
    with pytest.raises(nas.UserError, match="has not finished its first epoch .*delete .* and start again"):
        _toy_run(stopped, 1)
    with pytest.raises(nas.UserError, match="has not finished an epoch yet: if it is not running, delete"):
        _toy_run(stopped, 1, resume=True)
    (stopped / "tensorboard").mkdir()  # the same with TensorBoard on: both go
    with pytest.raises(nas.UserError, match="first epoch .*delete .*config.yaml and .*tensorboard and start again"):
        _toy_run(stopped, 1)
    with pytest.raises(nas.UserError, match="no run folder .*; give --resume the --out folder of a run"):
        _toy_run(tmp_path / "typo", 1, resume=True)


def test_a_folder_holding_an_old_runs_tensorboard_events_is_refused(tmp_path):
    """Left behind by deleting a run's files: a new run's events would join the old run's charts."""
    run_dir = tmp_path / "r"
    (run_dir / "tensorboard").mkdir(parents=True)
    (run_dir / "tensorboard" / "events.out.tfevents.1").write_bytes(b"old")
    with pytest.raises(nas.UserError, match=r"holds a run's files \(tensorboard\) but no checkpoint to resume"):
        _toy_run(run_dir, 1)
    assert (run_dir / "tensorboard" / "events.out.tfevents.1").read_bytes() == b"old"
    (run_dir / "notes.txt").write_text("mine")  # a folder of other files is still a new run's
    shutil.rmtree(run_dir / "tensorboard")
    _toy_run(run_dir, 1)
    assert (run_dir / "notes.txt").read_text() == "mine" and (run_dir / "checkpoint.pt").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: runs are not locked there")
def test_a_run_folder_another_process_writes_is_refused(tmp_path):
    """A second writer (a --resume of a run still running, two runs on one --out) is refused: the
    lock is held through another open file, as another process would hold it."""
    import fcntl

    run_dir = tmp_path / "r"
    _toy_run(run_dir, 1, stop_after=1)
    other = open(run_dir / ".lock", "a")
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(nas.UserError, match="is in use by another process .*choose another --out"):
            _toy_run(run_dir, 2, resume=True)
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        held = open(fresh / ".lock", "a")
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(nas.UserError, match="is in use by another process"):
            _toy_run(fresh, 1)
        held.close()
        assert not (fresh / "config.yaml").exists()
    finally:
        other.close()
    _, done = _toy_run(run_dir, 2, resume=True)  # released: the resume goes on
    assert done.done == 2
    assert not (run_dir / ".lock").exists()  # given back at the end, its file with it
    _toy_run(run_dir, 3, resume=True)


def test_run_skeleton_refuses_a_nan_loss_and_keeps_the_last_checkpoint(tmp_path):
    with pytest.raises(nas.UserError, match="training loss became nan in epoch 2; lower toy.lr"):
        _toy_run(tmp_path / "r", 3, nan_at=1)
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(nas.UserError, match="already holds a run"):
        _toy_run(tmp_path / "r", 3)


# ---- validation at the boundary ------------------------------------------------------------
@pytest.mark.parametrize(
    "override, needle",
    [
        ("supernet.space=cube", "unknown space 'cube'"),
        ("supernet.mode=adam", "unknown mode 'adam' (supernet.mode)"),
        ("supernet.ops=[none,no_such_op]", "no_such_op"),
        ("run.threads=0", "run.threads must be >= 1"),
        ("retrain.darts.epochs=0", "retrain.darts.epochs must be > 0"),
        ("retrain.nb201.drop_path_prob=1.5", "retrain.nb201.drop_path_prob must be in [0, 1)"),
        ("search.tau.min=-1", "search.tau"),
        ("supernet.ops=[none]", "supernet.ops ['none'] leaves nothing to choose between; give at least 2 ops"),
        ("retrain.darts.N=2", "retrain.darts.N must be >= 3"),
        ("retrain.nb201.auxiliary=true", "retrain.nb201.auxiliary and retrain.nb201.drop_path_prob"),
        ("retrain.nb201.drop_path_prob=0.5", "NAS-Bench-201's network has not"),
        ("retrain.nb201.cutout=-3", "retrain.nb201.cutout must be >= 0 pixels"),
        # SGD settings torch refuses with a traceback, or that would train by gradient ascent
        ("retrain.nb201.momentum=0", "retrain.nb201.nesterov needs momentum > 0; for plain SGD set"),
        ("retrain.darts.momentum=-0.5", "retrain.darts.momentum must be in [0, 1)"),
        ("retrain.model.weight_decay=-1", "retrain.model.weight_decay must be a finite number >= 0"),
        ("retrain.nb201.lr_min=-1", "retrain.nb201.lr_min must be a finite number >= 0"),
        ("retrain.nb201.lr=.inf", "retrain.nb201.lr must be > 0 and finite"),
        ("retrain.nb201.grad_clip=-1", "retrain.nb201.grad_clip must be a finite number >= 0"),
        ("retrain.darts.auxiliary_weight=-1", "retrain.darts.auxiliary_weight must be a finite number >= 0"),
        ("search.weights.lr_min=.inf", "search.weights.lr_min must be a finite number >= 0"),
        ("search.weights.momentum=1", "search.weights.momentum must be in [0, 1)"),
    ],
)
def test_validate_names_the_key(override, needle):
    with pytest.raises(nas.UserError) as info:
        validate(load_config(None, [override]))
    assert needle in str(info.value)


def test_library_constructors_raise_value_error():
    with pytest.raises(ValueError, match="unknown mode"):
        nas.build_supernet("nb201", "adam", C=4, N=1)
    with pytest.raises(ValueError, match="no_such_op"):
        nas.build_op("no_such_op", 4, 4, 1, True)
    for bad in ({"C": "4"}, {"C": 4.5}, {"N": 0}, {"num_classes": True}):
        with pytest.raises(ValueError, match="must be a positive int"):
            nas.build_supernet("nb201", **{"C": 4, "N": 1, **bad})
    with pytest.raises(ValueError, match="ops must be a list of op names, got the string 'nor_conv_3x3'"):
        nas.build_supernet("nb201", C=4, N=1, ops="nor_conv_3x3")
    with pytest.raises(TypeError, match=r"takes a config's search section \(cfg.search\), got Config"):
        nas.searcher.Searcher.from_config(nas.build_supernet("nb201", C=4, N=1), load_config(None, []))
    darts = nas.Genotype.parse(nas.darts.DARTS_V2)
    for p in (1.0, -0.5, 1.5):  # 1 drops every path (NaN logits); above, torch fails inside bernoulli_
        with pytest.raises(ValueError, match=r"drop_path_prob must be in \[0, 1\)"):
            nas.build_network(darts, C=4, N=3, drop_path_prob=p)
    cell = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    with pytest.raises(TypeError, match=r"takes a nas.Genotype, got str; read a cell's string with nas.Genotype.parse"):
        nas.build_network(cell, C=4, N=1)
    net = nas.build_supernet("nb201", "gdas", C=4, N=1, num_classes=3)
    with pytest.raises(ValueError, match=r"names op\(s\) \['foo'\] this supernet lacks; its ops: \['none'"):
        net.force({"normal": ["foo"] * 6})
    with pytest.raises(ValueError, match=r"scores\['normal'\] must have shape \(6, 5\) \(edges, ops\), got \(3, 5\)"):
        net.genotype(scores={"normal": torch.randn(3, 5)})  # would derive a 3-edge "cell"
    with pytest.raises(ValueError, match=r"scores must map each cell type \['normal'\]"):
        net.genotype(scores=torch.randn(6, 5))
    # A cell's string is taken where a Genotype is: the same network either way.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    net.eval()
    with net.forced(cell):
        by_string = net(x)
    with net.forced(nas.Genotype.parse(cell)):
        assert torch.equal(net(x), by_string)
    assert torch.equal(net.discretize(cell).eval()(x), net.discretize(nas.Genotype.parse(cell)).eval()(x))


# ---- Ctrl-C --------------------------------------------------------------------------------
def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import nas.search

    def interrupted_after_an_epoch(cfg, run_dir, *args, **kwargs):
        run_dir.mkdir(parents=True)
        (run_dir / "checkpoint.pt").write_bytes(b"")  # an epoch has ended
        raise KeyboardInterrupt

    def interrupted_at_once(cfg, run_dir, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nas.search, "run_search", interrupted_after_an_epoch)
    code = main(["--out", str(tmp_path / "r"), "--quiet", "--set", "run.device=cpu"])
    err = capsys.readouterr().err
    assert code == 130
    assert f"the last checkpoint in {tmp_path / 'r'} is intact; continue with python search.py --resume" in err
    monkeypatch.setattr(nas.search, "run_search", interrupted_at_once)
    code = main(["--out", str(tmp_path / "s"), "--quiet", "--set", "run.device=cpu"])
    err = capsys.readouterr().err
    assert (
        code == 130 and "interrupted before the first epoch ended: nothing was kept; start again with the same" in err
    )


# ---- packaging -----------------------------------------------------------------------------
def test_shipped_configs_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert packaged_config("default") is not None
    assert (
        find_config("configs/nb201_cifar10_cpu.yaml").read_text()
        == (ROOT / "configs" / "nb201_cifar10_cpu.yaml").read_text()
    )
    assert packaged_config("elsewhere/default.yaml") is None  # a path with a folder is never swapped
    assert load_config(find_config("nb201_cifar10_cpu")).data.name == "cifar10"
    (tmp_path / "nb201_cifar10_cpu").mkdir()  # a run folder of that name (an earlier --out) does not hide it
    assert load_config(find_config("nb201_cifar10_cpu")).data.name == "cifar10"
    (tmp_path / "mine.yaml").write_text("data: {name: cifar100}\n")  # a file where you are wins
    assert load_config(find_config("mine.yaml")).data.name == "cifar100"


def test_the_wheel_ships_the_configs_and_the_console_script(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("gumbel_nas-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    assert sorted(Path(n).name for n in names if n.startswith("nas/configs/")) == shipped
    assert "nas/benchmark_data/README.md" in names and any(n.startswith("nas/data/") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "gumbel-nas = nas.cli:main_exit" in entry_points
