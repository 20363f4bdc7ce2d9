"""``search.screen``: a search's first cells, each trained alone, and the most accurate reported."""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import choice_models  # noqa: E402
from cli_util import run_cli, sets  # noqa: E402
from test_search_methods import TINY, _tiny_window, lines, quiet  # noqa: E402

import nas  # noqa: E402
import nas.screen  # noqa: E402
from nas.benchmarks import cell_string  # noqa: E402
from nas.config import load_config, validate  # noqa: E402
from nas.errors import UserError  # noqa: E402
from nas.genotype import Genotype  # noqa: E402
from nas.screen import best_row, train_alone  # noqa: E402
from nas.search import SearchTask, run_search  # noqa: E402

CPU = torch.device("cpu")


def _sum(scores, pick):
    return sum(scores[r][j] for r, j in enumerate(pick))


@pytest.mark.parametrize("seed", range(40))
def test_best_first_walks_every_allowed_pick_once_by_descending_sum(seed):
    rng = random.Random(seed)
    scores = [
        [rng.choice([rng.random(), 0.5, -math.inf]) for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(1, 4))
    ]
    allowed = [
        p
        for p in itertools.product(*[range(len(r)) for r in scores])
        if all(scores[r][j] != -math.inf for r, j in enumerate(p))
    ]
    got = list(nas.screen.best_first(scores))
    assert sorted(tuple(p) for p in got) == sorted(allowed)  # each allowed pick once, no forbidden one
    sums = [_sum(scores, p) for p in got]
    assert all(a >= b - 1e-12 for a, b in zip(sums, sums[1:]))


def test_the_most_accurate_row_wins_and_a_diverged_one_never_does():
    rows = [
        {"held_out_acc": None, "held_out_loss": None},
        {"held_out_acc": 60.0, "held_out_loss": 1.2},
        {"held_out_acc": 61.0, "held_out_loss": 1.3},
        {"held_out_acc": 61.0, "held_out_loss": 1.1},
    ]
    assert best_row(rows) == 3
    assert best_row(rows[:2]) == 1
    assert best_row([{"held_out_acc": 50.0, "held_out_loss": 1.0}] * 2) == 0  # a tie: the search's order


def _fake_training(monkeypatch, accuracies, calls=None):
    """Each screened cell's held-out accuracy from ``accuracies``, in the order trained."""

    def fake(cfg, arch, split, device, world=None):
        if calls is not None:
            calls.append(str(arch))
        acc = accuracies[len(calls) - 1 if calls is not None else 0]
        return {"held_out_acc": acc, "held_out_loss": 1.0, "train_loss": 1.0, "seconds": 0.0}

    monkeypatch.setattr(nas.screen, "train_alone", fake)


def test_a_screened_search_reports_the_most_accurate_of_its_first_cells(tmp_path, monkeypatch):
    """The candidates are the derived cell, then the next cells by the logits (none left out under
    DARTS's rule); the cell reported, and written to genotype.json, is the one the held-out
    split rated best, and screen.json records every cell's figures."""
    calls = []
    _fake_training(monkeypatch, [60.0, 64.0, 62.0, 63.0], calls)
    overrides = ["search.epochs=2", "supernet.derive_none=false", "search.screen.cells=4"]
    cfg = load_config(None, TINY + overrides)
    out = []
    result = run_search(cfg, tmp_path / "r", CPU, progress=False, log=out.append)
    derived = lines(tmp_path / "r" / "metrics.jsonl")[-1]["genotype"]
    assert calls[0] == derived and len(calls) == len(set(calls)) == 4
    assert str(result.genotype) == calls[1]
    assert str(Genotype.from_json((tmp_path / "r" / "genotype.json").read_text())) == calls[1]
    record = json.loads((tmp_path / "r" / "screen.json").read_text())
    assert record["candidates"] == calls and record["chosen"] == calls[1]
    assert [r["held_out_acc"] for r in record["rows"]] == [60.0, 64.0, 62.0, 63.0]
    assert record["ranked_by"] == "the logits"
    assert any("screened 4 of 4 cells" in line for line in out)
    # The runners-up are the next three cells by the sum of the final log-probabilities, none excluded.
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    ops = lines(tmp_path / "r" / "arch_probs.jsonl")[-1]["ops"]
    logp = torch.log_softmax(ckpt["model"]["arch.normal"], dim=-1).tolist()
    allowed = [k for k, o in enumerate(ops) if o != "none"]
    ranked = sorted(itertools.product(allowed, repeat=len(logp)), key=lambda p: -_sum(logp, p))
    expected = [cell_string([ops[k] for k in p]) for p in ranked[:5]]
    assert calls == [derived] + [c for c in expected if c != derived][:3] and "none" not in "".join(calls)


def test_a_budgeted_screen_takes_its_cells_from_the_budgets_window(tmp_path, monkeypatch):
    from nas.cost import derived_cost

    calls = []
    _fake_training(monkeypatch, [50.0, 51.0, 49.0], calls)
    net, table, budget, cfg, window = _tiny_window(
        ["search.epochs=3", "search.prune=probability", "search.screen.cells=3"]
    )
    result = run_search(cfg, tmp_path / "r", CPU, progress=False, log=quiet)
    assert len(calls) == 3 and str(result.genotype) == calls[1]
    for cell in calls:
        cost = derived_cost(net, table, Genotype.from_nb201(cell), (3, 16, 16))
        assert 0.95 * budget <= cost <= 1.05 * budget
    assert (
        json.loads((tmp_path / "r" / "screen.json").read_text())["ranked_by"] == "the logits within the budget's window"
    )


def test_with_window_derivation_the_runners_up_follow_the_supernets_losses(tmp_path, monkeypatch):
    calls = []
    _fake_training(monkeypatch, [50.0, 49.0, 48.0], calls)
    _, _, _, cfg, _ = _tiny_window(
        ["search.epochs=2", "search.derive=window", "search.prune_batches=1", "search.screen.cells=3"]
    )
    result = run_search(cfg, tmp_path / "r", CPU, progress=False, log=quiet)
    window = [cell for cell, _ in lines(tmp_path / "r" / "metrics.jsonl")[-1]["window_losses"]]
    assert calls == window[:3] and str(result.genotype) == window[0]


def test_a_finished_search_resumed_with_a_screen_runs_it_and_an_interrupted_screen_continues(tmp_path, monkeypatch):
    """A resume may add the screen (written into config.yaml); stopped after its first cell, the
    screen resumes with the second, not the first again."""
    run_dir = tmp_path / "r"
    base = TINY + ["search.epochs=2"]
    run_search(load_config(None, base), run_dir, CPU, progress=False, log=quiet)
    assert not (run_dir / "screen.json").exists()
    calls = []

    def stop_at_second(cfg, arch, split, device, world=None):
        calls.append(str(arch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"held_out_acc": 40.0, "held_out_loss": 1.0, "train_loss": 1.0, "seconds": 0.0}

    monkeypatch.setattr(nas.screen, "train_alone", stop_at_second)
    screened = load_config(None, base + ["search.screen.cells=3"])
    with pytest.raises(KeyboardInterrupt):
        run_search(screened, run_dir, CPU, resume=True, progress=False, log=quiet)
    assert len(json.loads((run_dir / "screen.json").read_text())["rows"]) == 1
    assert load_config(run_dir / "config.yaml").search.screen.cells == 3
    first = calls[0]
    calls.clear()
    _fake_training(monkeypatch, [45.0, 39.0], calls)
    result = run_search(screened, run_dir, CPU, resume=True, progress=False, log=quiet)
    record = json.loads((run_dir / "screen.json").read_text())
    assert first not in calls and len(calls) == 2 and record["candidates"][0] == first
    assert str(result.genotype) == record["chosen"] == record["candidates"][1]


def test_training_alone_is_repeatable_and_measures_on_the_splits_second_part():
    """The same cell trained twice gives the same figures (every cell starts from the seed); the
    figures are measured on the split's second part."""
    cfg = load_config(None, TINY + ["search.screen.epochs=2"])
    task = SearchTask(load_config(None, TINY + ["search.screen.cells=2"]), CPU, log=quiet)
    split = task.screen_split()
    geno = Genotype.from_nb201(
        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
    )
    a, b = (train_alone(cfg, geno, split, CPU) for _ in range(2))
    assert a["held_out_acc"] == b["held_out_acc"] and a["held_out_loss"] == b["held_out_loss"]
    assert math.isfinite(a["held_out_loss"]) and 0 <= a["held_out_acc"] <= 100
    data, train, (x, y) = split
    other = train_alone(cfg, geno, (data, train, (x, torch.full_like(y, int(y[0]) ^ 1))), CPU)
    assert other["train_loss"] == a["train_loss"] and other["held_out_loss"] != a["held_out_loss"]


def test_a_custom_model_search_is_screened_over_its_labels(tmp_path, monkeypatch):
    calls = []
    _fake_training(monkeypatch, [30.0, 35.0, 20.0], calls)
    overrides = choice_models.TINY_SEARCH + [
        "supernet.model=choice_models:tiny_net",
        "search.epochs=1",
        "search.screen.cells=3",
    ]
    cfg = load_config(None, overrides)
    result = run_search(cfg, tmp_path / "r", CPU, progress=False, log=quiet)
    record = json.loads((tmp_path / "r" / "screen.json").read_text())
    assert len(calls) == 3 and record["chosen"] == calls[1] == str(result.genotype)
    assert json.loads((tmp_path / "r" / "architecture.json").read_text())["choices"] == result.genotype.choices


def test_train_alone_trains_a_custom_models_network():
    cfg = load_config(
        None, choice_models.TINY_SEARCH + ["supernet.model=choice_models:tiny_net", "search.screen.epochs=1"]
    )
    task = SearchTask(
        load_config(
            None, choice_models.TINY_SEARCH + ["supernet.model=choice_models:tiny_net", "search.screen.cells=2"]
        ),
        CPU,
        log=quiet,
    )
    arch = task.net.genotype()
    figures = train_alone(cfg, arch, task.screen_split(), CPU)
    assert math.isfinite(figures["held_out_loss"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["search.screen.cells=1"], "search.screen.cells must be 0 (off) or at least 2"),
        (["search.screen.cells=-2"], "search.screen.cells must be 0 (off) or at least 2"),
        (["search.screen.cells=2", "search.screen.epochs=0"], "search.screen.epochs must be >= 1"),
        (["search.screen.distance=0"], "search.screen.distance must be >= 1"),
    ],
)
def test_bad_screen_settings_are_refused(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(load_config(None, TINY + overrides))


def test_a_screen_is_refused_where_it_cannot_rank_whole_cells():
    darts = TINY + ["supernet.space=darts", "supernet.N=3", "search.screen.cells=2"]
    with pytest.raises(UserError, match="a darts cell drops edges when derived: set search.screen.cells=0"):
        SearchTask(load_config(None, darts), CPU, log=quiet)
    merge = choice_models.TINY_SEARCH + ["supernet.model=choice_models:merge_net", "search.screen.cells=2"]
    with pytest.raises(UserError, match="n_chosen > 1: set search.screen.cells=0"):
        SearchTask(load_config(None, merge), CPU, log=quiet)


def test_the_screen_from_the_command_line_prints_its_table(tmp_path, capsys, monkeypatch):
    _fake_training(monkeypatch, [55.0])
    code, out, err = run_cli(
        ["--out", tmp_path / "r", "--quiet", *sets(TINY + ["search.epochs=1", "search.screen.cells=2"])], capsys
    )
    assert code == 0, err
    assert "screened 2 of 2 cells" in out and "(the search's cell)" in out and "(runner-up 1)" in out


def test_inspect_shows_the_screen_and_names_a_damaged_record(tmp_path, capsys, monkeypatch):
    _fake_training(monkeypatch, [55.0, 57.0])
    run_dir = tmp_path / "r"
    run_search(
        load_config(None, TINY + ["search.epochs=1", "search.screen.cells=2"]), run_dir, CPU, progress=False, log=quiet
    )
    code, out, err = run_cli(["inspect", run_dir], capsys)
    assert code == 0, err
    assert "screened 2 of 2 cells (ranked by the logits)" in out and "(runner-up 1)" in out
    record = json.loads((run_dir / "screen.json").read_text())
    marked = [line for line in out.splitlines() if line.startswith(" * ")]
    assert len(marked) == 1 and record["chosen"] in marked[0]
    (run_dir / "screen.json").write_text('{"rows": 3}')
    code, out, err = run_cli(["inspect", run_dir], capsys)
    assert code == 2 and "screen record" in err and "not a screen record" in err and "Traceback" not in err


def test_the_screen_trains_on_the_weights_split_and_measures_on_the_architectures():
    """Not the test set, and not the other way round: the two parts are the search's own splits."""
    from nas.data import search_split, subset_indices

    cfg = load_config(None, TINY + ["search.screen.cells=2", "data.train_subset=200"])
    task = SearchTask(cfg, CPU, log=quiet)
    data, (wx, wy), (ax, ay) = task.screen_split()
    keep = subset_indices(data.train_x.shape[0], 200, cfg.run.seed)
    idx_w, idx_a = search_split(len(keep), cfg.data.weight_fraction, cfg.run.seed)
    assert torch.equal(wx, data.train_x[keep[idx_w]]) and torch.equal(wy, data.train_y[keep[idx_w]])
    assert torch.equal(ax, data.train_x[keep[idx_a]]) and torch.equal(ay, data.train_y[keep[idx_a]])
    assert len(wx) == len(ax) == 100 and not set(keep[idx_w].tolist()) & set(keep[idx_a].tolist())


def test_the_run_folder_stays_locked_while_the_screen_trains(tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    held = []

    def probe(cfg, arch, split, device, world=None):
        with open(tmp_path / "r" / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
                fcntl.flock(handle, fcntl.LOCK_UN)
            except OSError:
                held.append(True)
        return {"held_out_acc": 50.0, "held_out_loss": 1.0, "train_loss": 1.0, "seconds": 0.0}

    monkeypatch.setattr(nas.screen, "train_alone", probe)
    run_search(
        load_config(None, TINY + ["search.epochs=1", "search.screen.cells=2"]),
        tmp_path / "r",
        CPU,
        progress=False,
        log=quiet,
    )
    assert held == [True, True] and not (tmp_path / "r" / ".lock").exists()


def test_a_screened_run_resumed_without_its_screen_is_refused_and_left_as_it_was(tmp_path, capsys, monkeypatch):
    _fake_training(monkeypatch, [50.0, 52.0])
    run_dir = tmp_path / "r"
    run_search(
        load_config(None, TINY + ["search.epochs=1", "search.screen.cells=2"]), run_dir, CPU, progress=False, log=quiet
    )
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    code, out, err = run_cli(["--resume", run_dir, "--set", "search.screen.cells=0"], capsys)
    assert code == 2 and "was screened (screen.json), and search.screen.cells=0 would report another cell" in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    code, out, err = run_cli(["--resume", run_dir, "--quiet"], capsys)  # its own settings: the same cell
    assert code == 0, err
    assert json.loads((run_dir / "screen.json").read_text())["chosen"] in out


def test_a_resume_refused_for_its_screen_leaves_the_config_as_it_was(tmp_path, capsys):
    merge = choice_models.TINY_SEARCH + [
        "supernet.model=choice_models:merge_net",
        "search.epochs=1",
        "search.prune=probability",
    ]
    run_dir = tmp_path / "r"
    code, out, err = run_cli(["--out", run_dir, "--quiet", *sets(merge)], capsys)
    assert code == 0, err
    saved = (run_dir / "config.yaml").read_text()
    code, out, err = run_cli(["--resume", run_dir, "--set", "search.screen.cells=2"], capsys)
    assert code == 2 and "set search.screen.cells=0" in err
    assert (run_dir / "config.yaml").read_text() == saved
    code, out, err = run_cli(["--resume", run_dir, "--quiet"], capsys)  # a plain resume still works
    assert code == 0, err


def test_a_budget_cap_without_a_tolerance_is_screened_however_many_cells_fit(tmp_path, monkeypatch):
    """A cap alone lets thousands of cells fit: the screen walks the logits' order, not the window."""
    from nas.cost import cost_table, derived_cost

    calls = []
    _fake_training(monkeypatch, [50.0, 51.0, 52.0], calls)
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=False)
    table = cost_table(net, "flops", (3, 16, 16))
    budget = table.fixed + 3 * float(table.costs["normal"].max())
    overrides = ["supernet.derive_none=false", "search.cost.form=budget", "search.cost.weight=1"]
    cfg = load_config(
        None, TINY + overrides + [f"search.cost.budget={budget}", "search.epochs=2", "search.screen.cells=3"]
    )
    run_search(cfg, tmp_path / "r", CPU, progress=False, log=quiet)
    assert len(calls) == 3
    assert all(derived_cost(net, table, Genotype.from_nb201(c), (3, 16, 16)) <= budget * (1 + 1e-9) for c in calls)


def test_a_damaged_screen_record_is_trained_again_and_finished_cells_are_kept_by_name(tmp_path, monkeypatch):
    from nas.screen import run_screen

    cfg = load_config(None, TINY + ["search.screen.cells=2", "search.screen.epochs=3"])
    cells = [
        Genotype.from_nb201(f"|nor_conv_3x3~0|+|skip_connect~0|{op}~1|+|skip_connect~0|none~1|avg_pool_3x3~2|")
        for op in ("nor_conv_1x1", "avg_pool_3x3")
    ]
    row = {"cell": str(cells[1]), "held_out_acc": 70.0, "held_out_loss": 0.5, "train_loss": 0.4, "seconds": 1.0}
    (tmp_path / "screen.json").write_text(json.dumps({"version": 1, "epochs": 3, "rows": [row]}))
    calls = []
    _fake_training(monkeypatch, [60.0], calls)
    out = []
    chosen, record = run_screen(cfg, cells, "the logits", None, tmp_path, CPU, log=out.append)
    assert calls == [str(cells[0])] and record["rows"][1] == row and chosen is cells[1]
    (tmp_path / "screen.json").write_text(json.dumps({"version": 1, "epochs": 3, "rows": [{"cell": 3}]}))
    calls.clear()
    _fake_training(monkeypatch, [60.0, 61.0], calls)
    out.clear()
    run_screen(cfg, cells, "the logits", None, tmp_path, CPU, log=out.append)
    assert len(calls) == 2 and any("damaged or from another version" in line for line in out)


def test_a_screened_cell_trains_at_the_supernets_size_with_the_searchs_weight_settings():
    from nas.screen import protocol

    cfg = load_config(
        None,
        TINY
        + ["supernet.C=6", "supernet.N=2", "search.weights.lr=0.07", "search.weights.lr_min=0.002"]
        + ["search.weights.weight_decay=0.001", "search.screen.epochs=4", "search.batch_size=16"],
    )
    p = protocol(cfg)
    assert (p.C, p.N, p.epochs, p.batch_size, p.steps_per_epoch) == (6, 2, 4, 16, 3)
    assert (p.lr, p.lr_min, p.weight_decay, p.momentum, p.nesterov, p.grad_clip) == (0.07, 0.002, 0.001, 0.9, True, 5.0)
    assert (p.cutout, p.auxiliary, p.drop_path_prob) == (0, False, 0.0)


def test_with_a_distance_every_screened_cell_differs_from_the_others_in_that_many_edges(tmp_path, monkeypatch):
    """distance=3: the first cell by the logits that differs from the derived cell (and from each one
    taken) in 3 or more edges, in the logits' order; the budget's window still holds them."""
    from nas.cost import derived_cost

    calls = []
    _fake_training(monkeypatch, [50.0, 51.0, 52.0, 49.0], calls)
    net, table, budget, cfg, _ = _tiny_window(["search.epochs=2", "search.screen.cells=4", "search.screen.distance=3"])
    run_search(cfg, tmp_path / "r", CPU, progress=False, log=quiet)
    ops = [[op for op, _ in Genotype.from_nb201(c).normal] for c in calls]
    assert len(calls) == 4
    assert all(sum(x != y for x, y in zip(a, b)) >= 3 for a, b in itertools.combinations(ops, 2))
    assert all(
        0.95 * budget <= derived_cost(net, table, Genotype.from_nb201(c), (3, 16, 16)) <= 1.05 * budget for c in calls
    )
    record = json.loads((tmp_path / "r" / "screen.json").read_text())
    assert record["ranked_by"].endswith("each differing from the earlier ones in at least 3 choices")


def test_the_docstring_example_runs():
    import doctest

    result = doctest.testmod(nas.screen)
    assert result.attempted > 0 and result.failed == 0


def test_rows_of_inverts_arch_of_rows_for_a_space_and_a_custom_model():
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=False)
    rows = {"normal": [1, 2, 3, 4, 3, 2]}  # no none: DARTS's rule never derives it
    scores = {c: torch.full(tuple(net.arch[c].shape), -math.inf) for c in net.arch}
    scores["normal"][torch.arange(6), torch.tensor(rows["normal"])] = 0.0
    assert net.rows_of(net.genotype(scores=scores)) == rows

    model = nas.Supernet.from_model(choice_models.tiny_net(), mode="gdas")
    rows = {"choices": [1, 0, 0, 1]}
    arch = model.arch_of_rows(rows)
    assert arch == {"b0.kernel": "k5", "b0.skip": "identity", "b1.kernel": "k3", "b1.skip": "conv"}
    assert model.rows_of(arch) == rows
    merged = nas.Supernet.from_model(choice_models.merge_net(), mode="gdas")
    with pytest.raises(ValueError, match="n_chosen > 1"):
        merged.rows_of({"b0.kernel": "k3", "b0.skip": "conv", "merge": [0, 1]})
