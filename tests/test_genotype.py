"""Genotypes and their text formats (nas/genotype.py)."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

import nas
from nas.darts import DARTS_V2, darts_edges
from nas.genotype import Genotype, disconnected_warning
from nas.nb201 import nb201_edges

NB201_ALL = list(itertools.product(nas.NB201_OPS, repeat=6))


def _nb201_string(ops) -> str:
    a, b, c, d, e, f = ops
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


def _random_darts(rng: random.Random) -> Genotype:
    cells = {}
    for cell in ("normal", "reduce"):
        edges = []
        for i in range(4):
            for j in rng.sample(range(2 + i), 2):
                edges.append((rng.choice(nas.DARTS_OPS), j))
        cells[cell] = edges
    return Genotype("darts", cells["normal"], cells["reduce"], [2, 3, 4, 5], [2, 3, 4, 5])


# ---------------------------------------------------------------------------
# Edge lists
# ---------------------------------------------------------------------------
def test_edge_orders():
    assert nb201_edges() == [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    edges = darts_edges()
    assert len(edges) == 14
    assert edges[:5] == [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert edges[-1] == (5, 4)
    assert all(j < i for i, j in edges)


# ---------------------------------------------------------------------------
# NB201 strings
# ---------------------------------------------------------------------------
def test_nb201_round_trip_all_15625_cells():
    assert len(NB201_ALL) == 5**6
    seen = set()
    for ops in NB201_ALL:
        s = _nb201_string(ops)
        g = Genotype.from_nb201(s)
        assert g.to_nb201() == s
        assert str(g) == s
        assert g.space == "nb201" and g.reduce is None
        assert [op for op, _ in g.normal] == list(ops)
        assert [j for _, j in g.normal] == [j for _, j in nb201_edges()]
        seen.add(tuple(g.normal))
    assert len(seen) == 5**6  # distinct strings give distinct genotypes


def test_nb201_parse_dispatch_and_whitespace():
    s = _nb201_string(("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3", "none"))
    assert Genotype.parse(s).to_nb201() == s
    assert Genotype.parse("  " + s + "\n").to_nb201() == s
    assert Genotype.from_nb201(s).edge_targets() == [1, 2, 2, 3, 3, 3]
    for parse in (Genotype.parse, Genotype.from_nb201, Genotype.from_darts):
        with pytest.raises(ValueError, match="an architecture's text must be a string, got int: 123"):
            parse(123)


def test_nb201_json_round_trip_sample():
    rng = random.Random(0)
    for ops in rng.sample(NB201_ALL, 200):
        g = Genotype.from_nb201(_nb201_string(ops))
        back = Genotype.from_json(g.to_json())
        assert back == g
        assert back.to_nb201() == g.to_nb201()
        assert Genotype.parse(g.to_json(indent=None)) == g
        d = json.loads(g.to_json())
        assert d["arch"] == g.to_nb201() and d["space"] == "nb201"


def test_json_round_trip_keeps_ops_and_probs():
    g = Genotype.from_nb201(_nb201_string(["nor_conv_3x3"] * 6))
    g.ops = list(nas.NB201_OPS)
    g.probs = {"normal": [[0.1, 0.2, 0.3, 0.25, 0.15]] * 6}
    back = Genotype.from_json(g.to_json())
    assert back == g and back.probs == g.probs and back.ops == g.ops


# ---------------------------------------------------------------------------
# DARTS strings
# ---------------------------------------------------------------------------
def test_darts_v2_round_trip():
    g = Genotype.from_darts(DARTS_V2)
    assert g.space == "darts"
    assert g.to_darts() == DARTS_V2
    assert str(g) == DARTS_V2
    assert g.normal[:2] == [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]
    assert g.normal[-1] == ("dil_conv_3x3", 2)
    assert g.reduce[0] == ("max_pool_3x3", 0)
    assert g.normal_concat == g.reduce_concat == [2, 3, 4, 5]
    assert g.edge_targets("reduce") == [2, 2, 3, 3, 4, 4, 5, 5]
    assert Genotype.parse(DARTS_V2) == g
    back = Genotype.from_json(g.to_json())
    assert back == g and back.to_darts() == DARTS_V2


def test_darts_random_round_trips():
    rng = random.Random(1)
    for _ in range(200):
        g = _random_darts(rng)
        s = g.to_darts()
        back = Genotype.from_darts(s)
        assert back == g and back.to_darts() == s
        assert Genotype.parse(g.to_json()) == g


def test_darts_range_concat_form():
    # DARTS's search code prints the concat lists as range objects.
    s = DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)").replace(
        "reduce_concat=[2, 3, 4, 5]", "reduce_concat=range(2, 6)"
    )
    assert "range(2, 6)" in s and "[2, 3, 4, 5]" not in s
    g = Genotype.from_darts(s)
    assert g.normal_concat == g.reduce_concat == [2, 3, 4, 5]
    assert g.to_darts() == DARTS_V2
    assert Genotype.parse(s) == Genotype.from_darts(DARTS_V2)


def test_darts_parse_accepts_keyword_order_and_whitespace():
    g = Genotype.from_darts(DARTS_V2)
    s = (
        f"\n Genotype(reduce={g.reduce!r}, reduce_concat=[2, 3, 4, 5],\n"
        f"          normal={g.normal!r}, normal_concat=[2, 3, 4, 5]) \n"
    )
    assert Genotype.parse(s) == g


# ---------------------------------------------------------------------------
# Malformed input
# ---------------------------------------------------------------------------
GOOD_NB201 = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"

BAD_NB201 = {
    "empty": "",
    "no bars": "nor_conv_3x3~0+skip_connect~0|nor_conv_1x1~1",
    "missing closing bar": "|nor_conv_3x3~0+|skip_connect~0|nor_conv_1x1~1|",
    "wrong source index": "|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|",
    "sources swapped": "|nor_conv_3x3~0|+|skip_connect~1|nor_conv_1x1~0|",
    "too many inputs": "|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|",
    "too few inputs": "|nor_conv_3x3~0|+|skip_connect~0|",
    "no tilde": "|nor_conv_3x3|+|skip_connect~0|nor_conv_1x1~1|",
    "bad op characters": "|nor-conv~0|+|skip_connect~0|nor_conv_1x1~1|",
    "trailing plus": GOOD_NB201 + "+",
    "empty op": "|~0|+|skip_connect~0|nor_conv_1x1~1|",
}


# What each refusal says (part of it): the problem and where.
NB201_NEEDLES = {
    "empty": "not a nb201 architecture: ''; expected e.g. |nor_conv_3x3~0|",
    "no bars": "not a nb201 architecture: 'nor_conv_3x3~0+skip_connect~0|nor_conv_1x1~1'",
    "missing closing bar": "node 1 '|nor_conv_3x3~0' must look like |op~0|op~1|",
    "wrong source index": "expected 'op~0' in node 1, got 'nor_conv_3x3~1'",
    "sources swapped": "expected 'op~0' in node 2, got 'skip_connect~1'",
    "too many inputs": "node 1 needs 1 inputs, got 2",
    "too few inputs": "node 2 needs 2 inputs, got 1",
    "no tilde": "expected 'op~0' in node 1, got 'nor_conv_3x3'",
    "bad op characters": "expected 'op~0' in node 1, got 'nor-conv~0'",
    "trailing plus": "node 4 '' must look like |op~0|op~1|",
    "empty op": "expected 'op~0' in node 1, got '~0'",
}


@pytest.mark.parametrize("name", list(BAD_NB201))
def test_malformed_nb201_is_user_error(name):
    with pytest.raises(nas.UserError, match=re.escape(NB201_NEEDLES[name])):
        Genotype.from_nb201(BAD_NB201[name])


def _v2_with(old: str, new: str) -> str:
    assert old in DARTS_V2
    return DARTS_V2.replace(old, new, 1)


BAD_DARTS = {
    "syntax error": DARTS_V2[:-1],
    "not a call": "[('sep_conv_3x3', 0)]",
    "other function": DARTS_V2.replace("Genotype(", "Genotipe(", 1),
    "attribute call": "genotypes." + DARTS_V2,
    "positional args": "Genotype([('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [2], [('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1)], [2])",
    "missing field": _v2_with(", reduce_concat=[2, 3, 4, 5]", ""),
    "extra field": _v2_with("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[2, 3, 4, 5], extra=1"),
    "odd edge count": _v2_with("('dil_conv_3x3', 2)]", "]"),
    "empty edges": "Genotype(normal=[], normal_concat=[2], reduce=[], reduce_concat=[2])",
    "source out of range": _v2_with(
        "('sep_conv_3x3', 1), ('sep_conv_3x3', 0)", "('sep_conv_3x3', 2), ('sep_conv_3x3', 0)"
    ),
    "negative source": _v2_with("('sep_conv_3x3', 0)", "('sep_conv_3x3', -1)"),
    "edge not a pair": _v2_with("('sep_conv_3x3', 0)", "('sep_conv_3x3', 0, 1)"),
    "op not a string": _v2_with("('sep_conv_3x3', 0)", "(3, 0)"),
    "source not an int": _v2_with("('sep_conv_3x3', 0)", "('sep_conv_3x3', '0')"),
    "concat not ints": _v2_with("normal_concat=[2, 3, 4, 5]", "normal_concat=['2']"),
    "concat not a list": _v2_with("normal_concat=[2, 3, 4, 5]", "normal_concat=5"),
    "range of floats": _v2_with("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2.0, 6)"),
    "code, not literal": _v2_with("normal_concat=[2, 3, 4, 5]", "normal_concat=__import__('os').getcwd()"),
    "name, not literal": _v2_with("normal_concat=[2, 3, 4, 5]", "normal_concat=CONCAT"),
    # parsed, but no DARTS network has the cell: five nodes; a reduce cell's output joining its inputs
    "five nodes": _v2_with("normal=[", "normal=[('skip_connect', 0), ('skip_connect', 1), "),
    "reduce concat names an input": _v2_with("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[0, 3, 4, 5]"),
    "three of four nodes": _v2_with("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4]"),
}


# The structural refusals name what the cell needs; anything that is not DARTS's literal form gets
# the catch-all, which shows that form.
_NOT_DARTS, _MALFORMED = "not a darts architecture: ", "malformed DARTS genotype"
DARTS_NEEDLES = {
    **{name: _MALFORMED for name in BAD_DARTS},
    "not a call": _NOT_DARTS,
    "other function": _NOT_DARTS,
    "attribute call": _NOT_DARTS,
    "odd edge count": "the darts normal cell has 4 nodes of two edges each: it needs 8 edges, got 7",
    "empty edges": "it needs 8 edges, got 0",
    "source out of range": "edge 1 of the darts normal cell reads node 2, but node 2 can only read nodes 0..1",
    "negative source": "edge 0 of the darts normal cell reads node -1",
    "five nodes": "it needs 8 edges, got 10",
    "reduce concat names an input": "reduce_concat [0, 3, 4, 5] must list 4 of the intermediate nodes 2..5",
    "three of four nodes": "normal_concat [2, 3, 4] must list 4 of the intermediate nodes 2..5",
}


@pytest.mark.parametrize("name", list(BAD_DARTS))
def test_malformed_darts_is_user_error(name):
    with pytest.raises(nas.UserError, match=re.escape(DARTS_NEEDLES[name])):
        Genotype.from_darts(BAD_DARTS[name])


BAD_JSON = {
    "not json": "{space: nb201}",
    "not an object": "[1, 2, 3]",
    "missing space": json.dumps({"normal": [["none", 0]]}),
    "missing normal": json.dumps({"space": "nb201"}),
    "edge not a pair": json.dumps({"space": "nb201", "normal": [["none", 0, 1]]}),
    "source not a number": json.dumps({"space": "nb201", "normal": [["none", "x"]]}),
    "normal not a list": json.dumps({"space": "nb201", "normal": 5}),
}


@pytest.mark.parametrize("text", list(BAD_JSON.values()), ids=list(BAD_JSON))
def test_malformed_json_is_user_error(text):
    with pytest.raises(nas.UserError):
        Genotype.from_json(text)


@pytest.mark.parametrize("text", ["", "   ", "hello", "nor_conv_3x3~0", "Genotype", "(1, 2)", "[]"])
def test_parse_rejects_unknown_formats(text):
    with pytest.raises(nas.UserError):
        Genotype.parse(text)


def test_nb201_text_with_spaces_around_plus_and_json_with_a_reduce_cell():
    spaced = GOOD_NB201.replace("+", " + ")
    assert Genotype.from_nb201(spaced).to_nb201() == GOOD_NB201
    record = json.loads(Genotype.from_nb201(GOOD_NB201).to_json())
    record["reduce"] = record["normal"]
    with pytest.raises(nas.UserError, match="an nb201 genotype has one cell type; remove its reduce cell"):
        Genotype.from_json(json.dumps(record))


def test_parse_dispatches_to_each_format():
    nb = Genotype.parse(GOOD_NB201)
    assert nb.space == "nb201" and nb.to_nb201() == GOOD_NB201
    dg = Genotype.parse(DARTS_V2)
    assert dg.space == "darts" and dg.to_darts() == DARTS_V2
    assert Genotype.parse(nb.to_json()) == nb
    assert Genotype.parse(dg.to_json()) == dg
    # Each format's errors come from that format's parser.
    with pytest.raises(nas.UserError, match="NB201"):
        Genotype.parse("|nor_conv_3x3~1|")
    with pytest.raises(nas.UserError, match="DARTS"):
        Genotype.parse("Genotype(normal=1)")
    with pytest.raises(nas.UserError, match="JSON"):
        Genotype.parse("{not json")


def test_wrong_space_conversions_raise():
    with pytest.raises(ValueError):
        Genotype.from_darts(DARTS_V2).to_nb201()
    with pytest.raises(ValueError):
        Genotype.from_nb201(GOOD_NB201).to_darts()


def test_same_architecture_ignores_probabilities():
    a = Genotype.from_nb201(GOOD_NB201)
    b = Genotype.from_nb201(GOOD_NB201)
    b.probs = {"normal": [[0.2] * 5] * 6}
    b.ops = list(nas.NB201_OPS)
    assert a.same_architecture(b) and a != b
    c = Genotype.from_nb201(GOOD_NB201.replace("skip_connect~2", "none~2"))
    assert not a.same_architecture(c)


# ---------------------------------------------------------------------------
# Parsed, but not a cell of its space: refused with what the cell needs
# ---------------------------------------------------------------------------
BAD_CONCAT = {
    "node that does not exist": _v2_with("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4, 9]"),
    "negative node": _v2_with("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4, -1]"),
    "nothing concatenated": _v2_with("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[]"),
}


@pytest.mark.parametrize("text", list(BAD_CONCAT.values()), ids=list(BAD_CONCAT))
def test_darts_concat_must_name_existing_nodes(text):
    with pytest.raises(nas.UserError, match=r"_concat \[.*\] must list 4 of the intermediate nodes 2\.\.5"):
        Genotype.from_darts(text)


def _record(**kw) -> str:
    d = Genotype.from_nb201(GOOD_NB201).to_dict()
    d.update(kw)
    return json.dumps(d)


BAD_RECORDS = {
    # NB201Cell ignores the source index: unchecked, this would build GOOD_NB201's wiring,
    # and str() of the result would be an NB201 string that from_nb201 rejects.
    "nb201 sources out of order": (
        _record(normal=[[op, 2] for op, _ in Genotype.from_nb201(GOOD_NB201).normal]),
        r"must read nodes \[0, 0, 1, 0, 1, 2\] in order; got \[2, 2, 2, 2, 2, 2\]",
    ),
    "nb201 five edges": (
        _record(normal=[["none", j] for j in (0, 0, 1, 0, 1)]),
        r"needs the edges of a complete cell \(e.g. 6\), got 5",
    ),
    "darts source out of range": (
        json.dumps({**Genotype.from_darts(DARTS_V2).to_dict(), "normal": [["sep_conv_3x3", 7]] * 8}),
        r"edge 0 of the darts normal cell reads node 7, but node 2 can only read nodes 0..1",
    ),
    "unknown space": (_record(space="resnet"), "unknown genotype space 'resnet'; expected one of: nb201, darts"),
}


@pytest.mark.parametrize("text, needle", list(BAD_RECORDS.values()), ids=list(BAD_RECORDS))
def test_json_record_structure_is_validated(text, needle):
    with pytest.raises(nas.UserError, match=needle):
        Genotype.from_json(text)


@pytest.mark.parametrize(
    "text, dead",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", False),
        # every edge out of the input is none (a darts-mode search derived this one)
        ("|none~0|+|none~0|nor_conv_1x1~1|+|none~0|nor_conv_3x3~1|skip_connect~2|", True),
        # node 1 is dead, but 0 -> 2 -> 3 carries the input
        ("|none~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|", False),
        # only the edges into the output are none
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|", True),
        # the direct edge alone suffices
        ("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", False),
    ],
)
def test_disconnected_nb201_cells(text, dead):
    geno = Genotype.from_nb201(text)
    assert geno.disconnected_cells() == (["normal"] if dead else [])
    assert ("ignores its input" in disconnected_warning(geno)) is dead


def test_disconnected_darts_cells():
    geno = Genotype.parse(DARTS_V2)
    assert geno.disconnected_cells() == []
    # reduce cell: every kept edge none -> no concat node sees inputs 0 or 1
    dead = Genotype("darts", geno.normal, [("none", j) for _, j in geno.reduce], geno.normal_concat, geno.reduce_concat)
    assert dead.disconnected_cells() == ["reduce"]
    # node 2 alive through one edge keeps the cell alive, since node 2 is concatenated
    alive = [("sep_conv_3x3", 0)] + [("none", j) for _, j in geno.reduce[1:]]
    assert Genotype("darts", geno.normal, alive, geno.normal_concat, geno.reduce_concat).disconnected_cells() == []
