"""Retraining a discrete network: results, parameter and multiply-add counts, resume, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from cli_util import run_cli  # noqa: E402

import nas
from nas.config import load_config
from nas.flops import count_macs, count_parameters
from nas.retrain import cutout, run_retrain

TINY = [
    "data.num_train=192",
    "data.num_test=64",
    "data.image_size=16",
    "run.device=cpu",
    "search.warmup_epochs=0",
    "search.prune=off",
    "retrain.nb201.C=4",
    "retrain.nb201.N=1",
    "retrain.nb201.epochs=1",
    "retrain.nb201.batch_size=32",
    "retrain.nb201.steps_per_epoch=3",
    "retrain.darts.C=4",
    "retrain.darts.N=3",
    "retrain.darts.epochs=1",
    "retrain.darts.batch_size=16",
    "retrain.darts.steps_per_epoch=2",
    "retrain.darts.cutout=4",
]
SETS = [x for s in TINY for x in ("--set", s)]
NB201 = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"


def test_macs_match_a_hand_count():
    # All-skip cells: only the stem, the two ResNet blocks and the classifier compute.
    C, H, classes = 2, 8, 10
    skip = nas.Genotype.from_nb201(
        "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    )
    model = nas.build_network(skip, C=C, N=1, num_classes=classes)
    stem = C * 3 * 9 * H * H
    block1 = (2 * C * C * 9 + 2 * C * 2 * C * 9 + 2 * C * C) * (H // 2) ** 2
    block2 = (4 * C * 2 * C * 9 + 4 * C * 4 * C * 9 + 4 * C * 2 * C) * (H // 4) ** 2
    expected = stem + block1 + block2 + 4 * C * classes
    assert count_macs(model, (3, H, H)) == expected == 10704
    # One 3x3 conv edge per cell adds C_stage^2 * 9 * pixels in each of the three stages.
    conv = nas.Genotype.from_nb201(
        "|nor_conv_3x3~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    )
    extra = sum((C * m) ** 2 * 9 * (H // m) ** 2 for m in (1, 2, 4))
    assert count_macs(nas.build_network(conv, C=C, N=1, num_classes=classes), (3, H, H)) == expected + extra


def test_macs_of_every_convolution_and_of_models_in_other_dtypes():
    from torch import nn

    # A 1d convolution: C_out * C_in/groups * k per output position; 3d likewise per voxel.
    assert count_macs(nn.Conv1d(4, 8, 3, padding=1), (4, 10)) == 8 * 4 * 3 * 10
    assert count_macs(nn.Conv3d(2, 4, 3, groups=2), (2, 5, 5, 5)) == 4 * 1 * 27 * 3**3
    # Transposed: each input pixel scatters a kernel into C_out/groups channels.
    assert count_macs(nn.ConvTranspose2d(4, 6, 2, stride=2), (4, 3, 3)) == 4 * 6 * 4 * 9
    # A float64 (or bf16) model is fed zeros of its own dtype; a model without parameters, float32 ones.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    want = count_macs(model, (3, 8, 8))
    assert count_macs(model.double(), (3, 8, 8)) == count_macs(model.to(torch.bfloat16), (3, 8, 8)) == want
    assert count_macs(nn.Sequential(nn.ReLU(), nn.AvgPool2d(2)), (3, 8, 8)) == 0


def test_retrain_a_derived_genotype(tmp_path):
    # Derive a genotype from a (random) supernet, as a search would.
    geno = nas.build_supernet("nb201", C=4, N=1).genotype()
    cfg = load_config(None, TINY)
    result = run_retrain(cfg, geno, tmp_path / "r", torch.device("cpu"), progress=False, log=lambda s: None)
    assert result.finished and 0.0 <= result.test_acc <= 100.0 and torch.isfinite(torch.tensor(result.test_loss))
    model = nas.build_network(geno, C=4, N=1, num_classes=cfg.data.num_classes)
    assert result.params == sum(p.numel() for p in model.parameters()) == count_parameters(model)
    assert result.macs == count_macs(model, (3, 16, 16))
    saved = json.loads((tmp_path / "r" / "result.json").read_text())
    assert saved["test_acc"] == result.test_acc and saved["params"] == result.params
    for name in ("config.yaml", "genotype.json", "metrics.jsonl", "checkpoint.pt"):
        assert (tmp_path / "r" / name).exists()


def test_retrain_resume_is_exact(tmp_path):
    cfg = load_config(None, TINY + ["retrain.nb201.epochs=2"])
    geno = nas.Genotype.from_nb201(NB201)
    cpu = torch.device("cpu")
    full = run_retrain(cfg, geno, tmp_path / "full", cpu, progress=False, log=lambda s: None)
    part = run_retrain(cfg, geno, tmp_path / "part", cpu, stop_after=1, progress=False, log=lambda s: None)
    assert not part.finished
    resumed = run_retrain(cfg, geno, tmp_path / "part", cpu, resume=True, progress=False, log=lambda s: None)
    assert resumed.finished and resumed.test_acc == full.test_acc and resumed.test_loss == full.test_loss
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_retrain_from_search_run_and_strings(tmp_path, capsys):
    # A search run directory.
    search_dir = tmp_path / "search"
    code, _, err = run_cli(
        [
            "--out",
            search_dir,
            "--quiet",
            "--set",
            "search.epochs=1",
            "--set",
            "supernet.C=4",
            "--set",
            "supernet.N=1",
            "--set",
            "search.steps_per_epoch=2",
            "--set",
            "search.batch_size=32",
        ]
        + SETS,
        capsys,
    )
    assert code == 0, err
    code, out, err = run_cli(["retrain", search_dir, "--out", tmp_path / "r1", "--quiet"] + SETS, capsys)
    assert code == 0, err
    geno = nas.Genotype.from_json((search_dir / "genotype.json").read_text())
    assert str(geno) in out and "test accuracy" in out and "parameters" in out
    assert "data.train_subset" not in out
    # An NB201 string and a DARTS genotype string; a subset of the training set is said.
    subset = ["--set", "data.train_subset=100"]
    code, out, err = run_cli(
        ["retrain", "--genotype", NB201, "--out", tmp_path / "r2", "--quiet"] + SETS + subset, capsys
    )
    assert code == 0, err
    assert "on synthetic (100 training images by data.train_subset; --set data.train_subset=null trains on all)" in out
    code, out, err = run_cli(["retrain", "--resume", tmp_path / "r2", "--quiet"], capsys)
    assert code == 0 and "on synthetic (100 training images by data.train_subset)" in out  # a resume keeps its data
    code, out, err = run_cli(
        ["retrain", "--genotype", nas.darts.DARTS_V2, "--out", tmp_path / "r3", "--quiet"] + SETS, capsys
    )
    assert code == 0, err
    assert nas.Genotype.from_json((tmp_path / "r3" / "genotype.json").read_text()).to_darts() == nas.darts.DARTS_V2
    # A genotype file.
    f = tmp_path / "g.json"
    f.write_text(nas.Genotype.from_nb201(NB201).to_json())
    code, out, err = run_cli(["retrain", "--genotype", f, "--out", tmp_path / "r4", "--quiet"] + SETS, capsys)
    assert code == 0, err
    # What a user may get wrong, each refused on one line that names the fix, nothing written.
    before = {p.name: p.read_bytes() for p in search_dir.iterdir()}
    arch = tmp_path / "choices.json"
    arch.write_text('{"op": "k3"}')
    held = tmp_path / "held"
    held.mkdir()
    (held / "genotype.json").write_text("mine")
    for argv, needle in [
        (
            [search_dir, "--out", search_dir],
            f"holds a search run, not a retrain run; choose another --out (to retrain its cell: retrain {search_dir} --out",
        ),
        (
            ["--resume", search_dir],
            f"a 'search' checkpoint, not a 'retrain' one; to retrain the cell it found: retrain {search_dir} --out",
        ),
        ([search_dir, "--resume", tmp_path / "r1"], "give either a search's folder"),
        (
            ["--genotype", search_dir],
            f"is a folder; to retrain the cell a search derived there, give the folder itself: retrain {search_dir}",
        ),
        (
            ["--genotype", arch],
            "holds a custom model's choices (architecture.json, or net.export()), not a cell of a built-in space; retrain it with --set supernet.model=",
        ),
        (
            ["--genotype", f, "--out", held],
            "holds a run's files (genotype.json) but no checkpoint to resume; choose another --out",
        ),
        (["--resume", tmp_path / "r1", "--set", "retrain.nb201.batch_size=999"], "does not match"),
        (
            [search_dir, "--out", tmp_path / "r5", "--set", "retrain.nb201.batch_size=999"],
            "retrain.nb201.batch_size 999 exceeds the",
        ),
    ]:
        code, _, err = run_cli(["retrain", "--quiet"] + SETS + argv, capsys)
        assert code == 2 and needle in err and err.count("\n") == 1, (argv, err)
    assert {p.name: p.read_bytes() for p in search_dir.iterdir()} == before
    assert (held / "genotype.json").read_text() == "mine" and not (tmp_path / "r5").exists()


def test_retraining_a_disconnected_cell_warns(tmp_path, capsys):
    dead = "|none~0|+|none~0|nor_conv_1x1~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
    code, out, err = run_cli(["retrain", "--genotype", dead, "--out", tmp_path / "r", "--quiet"] + SETS, capsys)
    assert code == 0, err
    assert "warning: the normal cell ignores its input" in err


_EIGHT = "[" + ", ".join(["('sep_conv_3x3', 0), ('sep_conv_3x3', 1)"] * 4) + "]"


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("|nor_conv_3x3~0|+|skip_connect~0|", "node 2 needs 2 inputs, got 1"),
        ("|nor_conv_3x3~1|+|a~0|b~1|+|a~0|b~1|c~2|", "expected 'op~0' in node 1, got 'nor_conv_3x3~1'"),
        ("Genotype(normal=[('sep_conv_3x3', 0)], reduce=3)", "malformed DARTS genotype"),
        ("not an architecture", "is neither an architecture string nor an existing file"),
        ("|conv_99~0|+|none~0|none~1|+|none~0|none~1|none~2|", "conv_99"),
        # a cell of one node: DARTS's networks have four
        (
            "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=[2], "
            "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])",
            "the darts normal cell has 4 nodes of two edges each: it needs 8 edges, got 2",
        ),
        (  # four nodes, of which the output joins one
            f"Genotype(normal={_EIGHT}, normal_concat=[2], reduce={_EIGHT}, reduce_concat=[2, 3, 4, 5])",
            "normal_concat [2] must list 4 of the intermediate nodes 2..5",
        ),
    ],
)
def test_malformed_genotype_exits_2(bad, needle, tmp_path, capsys):
    code, out, err = run_cli(["retrain", "--genotype", bad, "--out", tmp_path / "r"] + SETS, capsys)
    assert code == 2 and "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert not (tmp_path / "r").exists()


def test_cutout_zeroes_one_square_per_image():
    """DARTS's cutout: the 4x4 square [c - 2, c + 2) around a centre uniform over the image,
    cut where it crosses a border."""
    torch.manual_seed(0)
    x = torch.ones(2000, 3, 16, 16)
    y = cutout(x, 4)
    assert torch.equal((y[:, 0] == 0), (y[:, 2] == 0))  # the same square in every channel
    rows_seen, cols_seen = set(), set()
    for mask in y[:, 0] == 0:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        assert int(mask.sum()) == (bottom - top) * (right - left)  # one filled rectangle
        for lo, hi, seen in ((top, bottom, rows_seen), (left, right, cols_seen)):
            # [c - 2, c + 2) clipped to [0, 16): 4 wide inside, 2 or 3 at a border
            centre = hi - 2 if lo == 0 and hi < 4 else lo + 2
            assert (max(centre - 2, 0), min(centre + 2, 16)) == (lo, hi)
            seen.add(centre)
    assert rows_seen == cols_seen == set(range(16))  # every centre, the border rows and columns too
