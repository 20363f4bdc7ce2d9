"""nas.benchmarks: the packaged NB201 table, the official NATS-Bench files, CSV files, and errors.

The official sample (tests/fixtures/nats-tss-sample/) is the NATS-Bench topology "simple" format
as the official API's own tests ship it: meta.pickle.pbz2 and the records of cells 0, 11, 284.
"""

from __future__ import annotations

import bz2
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import nas
from nas import benchmarks as B
from nas.darts import DARTS_V2
from nas.errors import UserError
from nas.genotype import Genotype

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nats-tss-sample"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
CELL_1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
CELL_11 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|"


@pytest.fixture(scope="module")
def table():
    return nas.load_benchmark()


@pytest.fixture(scope="module")
def official():
    """The fixture directory; each test that reads cells gets the shared lazy cache."""
    return nas.load_benchmark(FIXTURE)


@pytest.fixture
def fixture_copy(tmp_path):
    d = tmp_path / "nats"
    shutil.copytree(FIXTURE, d)
    for f in d.iterdir():
        f.chmod(0o644)
    return d


# ---- the packaged table ----------------------------------------------------------------------
def test_packaged_table_facts(table):
    assert len(table) == 15625
    accs = np.array([table.query(i) for i in range(len(table))])
    assert round(float(accs.mean()), 2) == 87.06
    best = table.best()
    assert isinstance(best, B.BestCell)
    # 6111 and 13714 tie at 94.3733; ties go to the lowest index
    assert best.index == 6111 and best.accuracy == pytest.approx(94.3733, abs=1e-9)
    assert table.query(13714) == best.accuracy and best.arch == table.arch_string(6111)
    assert np.count_nonzero(accs == accs.max()) == 2
    assert table.query(ALL_SKIP) == pytest.approx(54.30, abs=5e-3)
    assert table.arch_string(1) == CELL_1 and table.query(1) == pytest.approx(93.66, abs=1e-9)
    assert table.percentile(best.index) > 99.9


def test_worst_cells_are_the_disconnected_ones(table):
    # The 341 cells whose input never reaches the output (every path crosses a none edge) score
    # 10.00, chance on 10 classes, and are the worst. Under the mid-rank rule they share one
    # percentile, 100 * (341 / 2) / 15625 = 1.09; the worst connected cell sits just above them.
    accs = np.array([table.query(i) for i in range(15625)])
    disconnected = np.array([bool(table.genotype(i).disconnected_cells()) for i in range(15625)])
    assert disconnected.sum() == 341 and np.array_equal(disconnected, accs == accs.min())
    assert accs.min() == 10.0 and accs[~disconnected].min() > 46
    assert table.percentile(int(np.argmin(accs))) == pytest.approx(100 * 170.5 / 15625)
    tied = np.flatnonzero(accs == accs[~disconnected].min())
    assert table.percentile(int(tied[0])) == pytest.approx(100 * (341 + len(tied) / 2) / 15625)


def test_packaged_values_are_the_csv_decimals(table):
    # round(acc * 10000) stored as an integer: the 4-decimal values come back exactly
    assert table.query(0) == 85.8633 and table.query(11) == 91.5833 and table.query(284) == 88.79
    assert nas.load_benchmark()._source is table._source  # loaded once per process


def test_percentile_definition(table):
    accs = table._source.columns[("cifar10", "test")]
    for i in (0, 1, 6111, 4242):
        below = np.count_nonzero(accs < accs[i])
        equal = np.count_nonzero(accs == accs[i])
        assert table.percentile(i) == pytest.approx(100 * (below + equal / 2) / 15625)
    assert table.percentile(6111) == pytest.approx(100 * (15623 + 1) / 15625)


def test_genotype_string_and_index_agree(table):
    for i in (0, 1, 11, 284, 6111, 9999, 15624):
        s = table.arch_string(i)
        geno = Genotype.from_nb201(s)
        assert table.index(s) == table.index(geno) == i
        assert table.query(s) == table.query(geno) == table.query(i) == table.query(np.int64(i))
        assert table.genotype(i).same_architecture(geno) and geno.to_nb201() == s


def test_packaged_order_matches_official_meta(table, official):
    assert len(official) == 15625
    assert [table.arch_string(i) for i in range(15625)] == official._source.order.archs


def test_cell_code_round_trip():
    codes = np.load(B.DATA_DIR / B.ARCH_FILE)
    assert sorted(codes.tolist()) == list(range(15625))  # a permutation of the 5**6 cells
    for code in (0, 1, 4, 5, 3906, 15624):
        assert B.encode_cell(B.decode_cell(code)) == code
    assert B.encode_cell(["none"] * 6) == 0 and B.encode_cell(["avg_pool_3x3"] * 6) == 15624


def test_packaged_table_refuses_what_it_does_not_hold(table):
    for kwargs, words in (
        (dict(dataset="cifar100"), "official"),
        (dict(metric="valid"), "official"),
        (dict(epochs=12), "official"),
        (dict(seed=777), "official"),
    ):
        with pytest.raises(UserError, match=words):
            table.query(1, **kwargs)


# ---- errors -----------------------------------------------------------------------------------
def test_bad_architectures(table):
    with pytest.raises(UserError, match="not a NAS-Bench-201 cell"):
        table.query(Genotype.parse(DARTS_V2))
    with pytest.raises(UserError, match="not a NAS-Bench-201 cell"):
        table.query(DARTS_V2)
    with pytest.raises(UserError, match="sep_conv_3x3"):
        table.query(CELL_1.replace("nor_conv_3x3~0|+", "sep_conv_3x3~0|+", 1))
    with pytest.raises(UserError, match="6 edges"):
        table.query("|none~0|+|none~0|skip_connect~1|")
    with pytest.raises(UserError, match="0..15624"):
        table.query(15625)
    with pytest.raises(UserError, match="out of range"):
        table.arch_string(-1)
    with pytest.raises(UserError):
        table.query(True)
    with pytest.raises(UserError):
        table.query("not an arch")


def test_unknown_dataset_and_metric_list_the_available(table, official):
    with pytest.raises(UserError, match="cifar10") as exc:
        table.query(1, dataset="mnist")
    assert "mnist" in str(exc.value)
    with pytest.raises(UserError) as exc:
        official.query(11, dataset="mnist")
    assert all(d in str(exc.value) for d in ("cifar10", "cifar10-valid", "cifar100", "ImageNet16-120"))
    with pytest.raises(UserError) as exc:
        official.query(11, dataset="cifar100", metric="train")
    assert "'train'" in str(exc.value) and all(m in str(exc.value) for m in ("test", "valid", "valtest"))
    with pytest.raises(UserError, match="available: test"):
        official.query(11, dataset="cifar10", metric="valid")  # cifar10 is trained on all 50k
    with pytest.raises(UserError, match="epochs=200 or epochs=12"):
        official.query(11, epochs=50)


# ---- the official files ----------------------------------------------------------------------
def test_official_cell_11(official):
    assert official.query(11) == pytest.approx(91.5833, abs=1e-3)
    assert official.query(CELL_11) == official.query(Genotype.from_nb201(CELL_11)) == official.query(11)
    assert [official.query(11, seed=s) for s in (777, 888, 999)] == pytest.approx([91.79, 91.76, 91.20])
    assert official.query(11, dataset="cifar100") == pytest.approx(67.61, abs=0.01)  # x-test, not ori-test
    assert official.query(11, dataset="cifar100", metric="valtest") != pytest.approx(67.61, abs=0.01)
    valid = official.query(11, dataset="cifar10-valid", metric="valid")
    assert 0 < valid < 100
    assert official.metrics("cifar10-valid") == ["test", "valid"]
    short = official.query(11, epochs=12)
    assert 0 < short < official.query(11)  # 12 epochs train less than 200
    with pytest.raises(UserError, match="seeds are 777, 888, 999"):
        official.query(11, seed=5)


def test_official_agrees_with_packaged_table(official, table):
    for i in (0, 11, 284):
        assert official.query(i) == pytest.approx(table.query(i), abs=1e-4)
        assert 0 < official.query(i, dataset="ImageNet16-120", metric="valid", epochs=12) < 100


def test_official_reads_cells_lazily(fixture_copy, monkeypatch):
    reads = []
    real = B._read_pickle
    monkeypatch.setattr(B, "_read_pickle", lambda path: reads.append(Path(path).name) or real(path))
    bench = nas.load_benchmark(fixture_copy)
    assert reads == ["meta.pickle.pbz2"] and bench._source._cells == {}
    assert bench.index(CELL_11) == 11 and bench.arch_string(284)  # index lookups read no cell file
    assert reads == ["meta.pickle.pbz2"]
    bench.query(11)
    bench.query(11, dataset="cifar100", seed=777)
    assert reads == ["meta.pickle.pbz2", "000011.pickle.pbz2"] and list(bench._source._cells) == [11]


def test_official_missing_cell_file(official):
    with pytest.raises(UserError, match="000005.pickle.pbz2"):
        official.query(5)
    with pytest.raises(UserError, match="all 15625 cells"):
        official.best()
    with pytest.raises(UserError, match="all 15625 cells"):
        official.percentile(11)


def test_missing_paths(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        nas.load_benchmark(tmp_path / "nowhere")
    with pytest.raises(UserError, match="meta.pickle.pbz2 is missing"):
        nas.load_benchmark(tmp_path)
    with pytest.raises(UserError, match="directory"):
        nas.load_benchmark(FIXTURE / "meta.pickle.pbz2")


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["000000.pickle.pbz2", "meta.pickle.pbz2"])
def test_refuses_code_in_pickles(fixture_copy, tmp_path, name):
    marker = tmp_path / "MARKER"
    payload = pickle.dumps({"meta_archs": [_Exploit(marker)], "200": _Exploit(marker)})
    assert b"system" in payload
    (fixture_copy / name).write_bytes(bz2.compress(payload))
    with pytest.raises(UserError, match=r"refusing to unpickle \w+\.system"):
        nas.load_benchmark(fixture_copy).query(0)
    assert not marker.exists()


def test_numpy_numbers_load_without_numpy(official, tmp_path):
    run = official._source.record(11)["200"]["all_results"][("cifar100", 777)]
    assert type(run["params"]) is float and run["params"] == pytest.approx(0.808276)
    ok = tmp_path / "ok.pbz2"
    ok.write_bytes(bz2.compress(pickle.dumps({"a": np.float64(1.5), "b": np.int32(-7), "c": np.float32(0.25)})))
    assert B._read_pickle(ok) == {"a": 1.5, "b": -7, "c": 0.25}
    for bad in (np.array([1.0, 2.0]), np.array(["x"], dtype=object)[0:1]):
        path = tmp_path / "bad.pbz2"
        path.write_bytes(bz2.compress(pickle.dumps({"x": bad})))
        with pytest.raises(UserError, match="refusing to unpickle numpy"):
            B._read_pickle(path)


@pytest.mark.parametrize("name", ["000011.pickle.pbz2", "meta.pickle.pbz2"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "bad-pickle"])
def test_damaged_files(fixture_copy, name, damage):
    path = fixture_copy / name
    raw = path.read_bytes()
    path.write_bytes(
        {
            "truncate": raw[: len(raw) // 2],
            "garbage": os.urandom(4096),
            "empty": b"",
            "bad-pickle": bz2.compress(pickle.dumps([1, 2])[:-3]),
        }[damage]
    )
    with pytest.raises(UserError, match=name):
        nas.load_benchmark(fixture_copy).query(11)


def test_cell_file_of_another_cell(fixture_copy):
    shutil.copy(fixture_copy / "000284.pickle.pbz2", fixture_copy / "000011.pickle.pbz2")
    with pytest.raises(UserError, match="not the record of cell 11"):
        nas.load_benchmark(fixture_copy).query(11)


def test_meta_without_arch_list(fixture_copy):
    (fixture_copy / "meta.pickle.pbz2").write_bytes(bz2.compress(pickle.dumps({"total_archs": 3})))
    with pytest.raises(UserError, match="meta_archs"):
        nas.load_benchmark(fixture_copy)


# ---- CSV files --------------------------------------------------------------------------------
def test_csv_cifar10(tmp_path, table):
    p = tmp_path / "c10.csv"
    p.write_text(f"index,arch,cifar10_test_accuracy\n1,{CELL_1},93.6600\n11,{CELL_11},91.5833\n")
    bench = nas.load_benchmark(p)
    assert len(bench) == 2 and bench.datasets() == ["cifar10"]
    assert bench.query(1) == bench.query(CELL_1) == table.query(1) == 93.66
    assert bench.query(Genotype.from_nb201(CELL_11)) == 91.5833
    with pytest.raises(UserError, match="not in"):
        bench.query(0)
    with pytest.raises(UserError, match="2 of the 15625"):
        bench.best()
    with pytest.raises(UserError, match="official"):
        bench.query(1, epochs=12)


def test_csv_general_columns(tmp_path):
    p = tmp_path / "c100.csv"
    p.write_text(
        "arch,cifar100_test_accuracy,cifar100_valid_accuracy,ImageNet16-120_test_accuracy,params\n"
        f"{CELL_11},67.61,67.9,30.1,0.8\n"
        f"{ALL_SKIP},20.5,21.0,10.2,0.1\n"
    )
    bench = nas.load_benchmark(p)
    assert bench.datasets() == ["cifar100", "ImageNet16-120"]
    assert bench.metrics("cifar100") == ["test", "valid"]
    assert bench.query(11, dataset="cifar100") == 67.61
    assert bench.query(CELL_11, dataset="cifar100", metric="valid") == 67.9
    assert bench.query(ALL_SKIP, dataset="ImageNet16-120") == 10.2
    with pytest.raises(UserError, match="cifar100, ImageNet16-120"):
        bench.query(11)  # no cifar10 column


def test_csv_full_table_allows_best(tmp_path, table):
    p = tmp_path / "full.csv"
    rows = [f"{i},{table.query(i):.4f}" for i in range(15625)]
    p.write_text("index,cifar10_test_accuracy\n" + "\n".join(reversed(rows)) + "\n")
    bench = nas.load_benchmark(p)
    assert len(bench) == 15625 and bench.best() == table.best()
    assert bench.percentile(ALL_SKIP) == table.percentile(ALL_SKIP)


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("foo,cifar10_test_accuracy\n1,90\n", "neither an 'index' nor an 'arch'"),
        ("index,accuracy\n1,90\n", "no accuracy column"),
        ("index,cifar10_test_accuracy\n1,ninety\n", "line 2: cifar10_test_accuracy 'ninety' is not a number"),
        ("index,cifar10_test_accuracy\n1,\n", "not a number"),
        ("index,cifar10_test_accuracy\n1,nan\n", "not a number"),
        ("index,cifar10_test_accuracy\n1,90\n1,91\n", "line 3: cell 1 appears twice"),
        ("index,cifar10_test_accuracy\n15625,90\n", "out of range"),
        ("index,cifar10_test_accuracy\none,90\n", "not an integer"),
        ("index,cifar10_test_accuracy\n1,90,5\n", "3 fields"),
        ("index,cifar10_test_accuracy\n", "no rows"),
        (f"index,arch,cifar10_test_accuracy\n2,{CELL_1},90\n", "official order"),
        ("arch,cifar10_test_accuracy\n|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|,90\n", "sep_conv_3x3"),
        ("index,index,cifar10_test_accuracy\n1,1,90\n", "repeats"),
    ],
)
def test_bad_csv(tmp_path, text, words):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(UserError, match=words):
        nas.load_benchmark(p)


def test_binary_file_is_not_a_csv(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"\xff\xfe\x00\x81" * 64)
    with pytest.raises(UserError):
        nas.load_benchmark(p)
