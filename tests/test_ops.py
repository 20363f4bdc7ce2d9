"""Candidate operations and the op registry (nas/ops.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.genotype import Genotype
from nas.nb201 import nb201_edges
from nas.ops import OPS, AvgPool3x3, Zero, build_op, register_op

pytestmark = pytest.mark.usefixtures("one_thread")


# The registry as shipped, read at collection time (user ops added by tests are removed again).
BUILTIN_OPS = sorted(OPS)
C = 4


def _expected_hw(size: int, stride: int) -> int:
    return (size + stride - 1) // stride  # "same" padding: ceil(size / stride)


# ---------------------------------------------------------------------------
# Every registered op: forward, backward, shapes, gradients
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [8, 7], ids=["even", "odd"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", BUILTIN_OPS)
def test_op_forward_backward_every_parameter_gets_gradient(name, stride, size):
    torch.manual_seed(0)
    op = build_op(name, C, C, stride, affine=True)
    op.train()
    x = torch.randn(2, C, size, size, requires_grad=True)
    x_before = x.detach().clone()
    y = op(x)
    hw = _expected_hw(size, stride)
    assert y.shape == (2, C, hw, hw)
    assert torch.isfinite(y).all()
    # Ops share their input with the other candidates of the edge: never modify it in place.
    assert torch.equal(x.detach(), x_before)
    if isinstance(op, Zero):
        # `none` is a structural zero: exact zeros, no parameters, no dependence on x.
        assert name == "none"
        assert not any(True for _ in op.parameters())
        assert torch.count_nonzero(y) == 0
        assert not y.requires_grad
        return
    # A random projection so that BN's scale and shift both get a gradient.
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    for pname, p in op.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(p.grad).all()
        assert torch.count_nonzero(p.grad) > 0, f"{name}: parameter {pname} got an all-zero gradient"


@pytest.mark.parametrize("name", BUILTIN_OPS)
def test_op_channel_change_and_eval_mode(name):
    torch.manual_seed(0)
    op = build_op(name, C, 2 * C, 1, affine=False)
    x = torch.randn(2, C, 6, 6)
    assert op(x).shape == (2, 2 * C, 6, 6)
    op.eval()
    with torch.no_grad():
        a, b = op(x), op(x)
    assert torch.equal(a, b)  # deterministic in eval mode


@pytest.mark.parametrize("name", BUILTIN_OPS)
def test_affine_false_ops_have_no_bn_parameters(name):
    op = build_op(name, C, C, 1, affine=False)
    for m in op.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.weight is None and m.bias is None
            assert m.running_mean is not None  # running statistics are still tracked


SCALABLE = [
    (name, stride)
    for name in BUILTIN_OPS
    for stride in (1, 2)
    if getattr(build_op(name, C, C, stride, affine=False), "accepts_scale", False)
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
@pytest.mark.parametrize("name, stride", SCALABLE)
def test_scale_folded_into_bn_equals_explicit_product(name, stride, affine, training):
    """op(x, w) is op(x) * w: same output, same gradients, same BN running statistics."""
    torch.manual_seed(0)
    folded = build_op(name, C, C, stride, affine=affine)
    explicit = build_op(name, C, C, stride, affine=affine)
    explicit.load_state_dict(folded.state_dict())
    folded.train(training), explicit.train(training)
    x = torch.randn(3, C, 8, 8)
    hw = _expected_hw(8, stride)
    r = torch.randn(3, C, hw, hw)
    results = []
    for op, run in ((folded, lambda op, x, w: op(x, w)), (explicit, lambda op, x, w: op(x) * w)):
        xi = x.clone().requires_grad_(True)
        w = torch.tensor(0.7, requires_grad=True)  # not 1, so a wrong fold would show
        y = run(op, xi, w)
        (y * r).sum().backward()
        grads = [p.grad.clone() for p in op.parameters()]
        results.append((y.detach(), w.grad, xi.grad, grads, [b.clone() for b in op.buffers()]))
    (y1, w1, x1, g1, b1), (y2, w2, x2, g2, b2) = results
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w1, w2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x1, x2, rtol=1e-4, atol=1e-5)
    for a, b in zip(g1 + b1, g2 + b2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_conv_ops_accept_a_folded_scale():
    # The ops that end in a BN take the straight-through weight themselves (saving memory).
    names = {name for name, _ in SCALABLE}
    assert {
        "nor_conv_1x1",
        "nor_conv_3x3",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
        "skip_connect",
    } <= names


def test_zero_op_called_directly_gives_right_zeros():
    z = build_op("none", C, 2 * C, 2, affine=False)
    y = z(torch.randn(3, C, 9, 9))
    assert y.shape == (3, 2 * C, 5, 5) and torch.count_nonzero(y) == 0


# ---------------------------------------------------------------------------
# Standard op lists
# ---------------------------------------------------------------------------
def test_nb201_op_order():
    assert nas.NB201_OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def test_darts_op_order():
    assert nas.DARTS_OPS == (
        "none",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
    )


def test_standard_ops_are_registered():
    assert set(nas.NB201_OPS) <= set(OPS) and set(nas.DARTS_OPS) <= set(OPS)


@pytest.mark.parametrize("name,kernel,padding", [("nor_conv_1x1", 1, 0), ("nor_conv_3x3", 3, 1)])
@pytest.mark.parametrize("stride", [1, 2])
def test_nor_conv_is_relu_conv_bn(name, kernel, padding, stride):
    op = build_op(name, C, 2 * C, stride, affine=False)
    children = list(op.children())
    assert [type(m) for m in children] == [nn.ReLU, nn.Conv2d, nn.BatchNorm2d]
    relu, conv, bn = children
    assert not relu.inplace  # the input is shared with the edge's other candidates
    assert conv.kernel_size == (kernel, kernel) and conv.padding == (padding, padding)
    assert conv.stride == (stride, stride) and conv.bias is None
    assert (conv.in_channels, conv.out_channels) == (C, 2 * C)
    assert bn.num_features == 2 * C and not bn.affine


def test_skip_connect_is_identity_only_when_shapes_allow():
    assert isinstance(build_op("skip_connect", C, C, 1, True), nn.Identity)
    x = torch.randn(1, C, 5, 5)
    assert torch.equal(build_op("skip_connect", C, C, 1, True)(x), x)
    assert not isinstance(build_op("skip_connect", C, C, 2, True), nn.Identity)
    assert not isinstance(build_op("skip_connect", C, 2 * C, 1, True), nn.Identity)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 9), (16, 16)])
@pytest.mark.parametrize("stride", [1, 2])
def test_avg_pool_equals_torch_avg_pool_without_padding_counts(stride, hw, layout):
    # On the CPU AvgPool3x3 runs as a depthwise box filter times 1/count: it must equal
    # F.avg_pool2d(count_include_pad=False) in values and input gradients, at every border.
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    if layout == "channels_last":  # not contiguous as NCHW: the F.avg_pool2d path
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    pool = AvgPool3x3(stride)
    pool.min_box_filter_numel = 0  # the box filter at every size (it starts at 16384 elements)
    ours = pool(x)
    ref = F.avg_pool2d(x, 3, stride=stride, padding=1, count_include_pad=False)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad(ours, x, g)
    (g_ref,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)
    assert not list(pool.parameters()) and not pool.state_dict()  # cached kernels are not state
    assert bool(pool._cache) == x.is_contiguous()  # the box filter ran on NCHW-contiguous input


def test_avg_pool_uses_the_box_filter_from_its_size_threshold():
    pool = AvgPool3x3(1)
    pool(torch.randn(1, 1, 8, 8))  # 64 elements: torch's pooling
    assert not pool._cache
    x = torch.randn(64, 8, 8, 8)  # 32768 elements: the box filter, same values
    torch.testing.assert_close(pool(x), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    assert pool._cache
    fresh = AvgPool3x3(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # low precision: torch's pooling, as before
        torch.testing.assert_close(fresh(x), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    fresh(x.to(torch.bfloat16))
    assert not fresh._cache


def test_avg_pool_first_run_in_inference_mode_still_trains():
    # The cached kernel must not be an inference tensor, or a later backward would fail.
    pool = AvgPool3x3(1)
    pool.min_box_filter_numel = 0
    with torch.inference_mode():
        pool(torch.randn(2, 3, 5, 5))
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    pool(x).sum().backward()
    # d(sum)/dx is the sum of 1/count over the windows holding a pixel: an interior pixel lies in
    # 9 windows of 9 pixels, the corner in 4 windows of 4, 6, 6 and 9 pixels.
    assert x.grad[0, 0, 2, 2].item() == pytest.approx(1.0)
    assert x.grad[0, 0, 0, 0].item() == pytest.approx(1 / 4 + 2 / 6 + 1 / 9)


def test_pools_are_parameter_free_at_equal_channels():
    for name in ("avg_pool_3x3", "max_pool_3x3"):
        assert not list(build_op(name, C, C, 1, True).parameters())
    # avg pool does not count padding: a constant image stays constant at the borders.
    x = torch.full((1, C, 5, 5), 3.0)
    assert torch.allclose(build_op("avg_pool_3x3", C, C, 1, True)(x), x)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------
def _my_op_factory(C_in, C_out, stride, affine):
    return nn.Sequential(
        nn.ReLU(inplace=False), nn.Conv2d(C_in, C_out, 3, stride, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine)
    )


@pytest.fixture
def my_op():
    """Register `my_op` for one test and remove it afterwards, whatever happens."""
    assert "my_op" not in OPS
    try:
        register_op("my_op", _my_op_factory)
        yield "my_op"
    finally:
        OPS.pop("my_op", None)


def test_unknown_op_is_value_error():
    # The library raises ValueError for bad arguments; the command line turns it into a user error.
    with pytest.raises(ValueError, match="no_such_op"):
        build_op("no_such_op", C, C, 1, True)
    with pytest.raises(ValueError, match=r"unknown op\(s\) 'no_such_op'; registered ops: "):
        nas.build_supernet("nb201", C=4, N=1, ops=["none", "no_such_op"])
    for twice in (["none", "none"], ["none", "skip_connect", "skip_connect"]):
        with pytest.raises(ValueError, match="names an op twice; list each op once"):
            nas.build_supernet("nb201", C=4, N=1, ops=twice)
    with pytest.raises(ValueError, match="the op list is empty; give at least one op"):
        nas.build_supernet("nb201", C=4, N=1, ops=[])
    geno = Genotype.from_nb201("|no_such_op~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="unknown op 'no_such_op'; registered ops: "):
        nas.build_network(geno, C=4, N=1, num_classes=3)


def test_register_op_one_call_and_build(my_op):
    assert OPS[my_op] is _my_op_factory
    op = build_op(my_op, C, C, 2, affine=True)
    assert op(torch.randn(2, C, 8, 8)).shape == (2, C, 4, 4)


def test_register_op_twice_needs_overwrite(my_op):
    with pytest.raises(ValueError):
        register_op(my_op, _my_op_factory)
    other = lambda C_in, C_out, stride, affine: nn.Identity()  # noqa: E731
    register_op(my_op, other, overwrite=True)
    assert OPS[my_op] is other


@pytest.mark.parametrize("name", ["conv~5", "a|b", "a+b", "it's", "two words", "", 5, "conv-5x5", "conv.5"])
def test_an_op_name_that_would_not_read_back_is_refused(name):
    """The cell's string forms (|op~0|+..., DARTS's ('op', 0)) must parse back to the same ops."""
    with pytest.raises(ValueError, match="must be letters, digits and underscores"):
        register_op(name, _my_op_factory)
    assert name not in OPS


def test_a_factory_that_is_not_callable_is_refused():
    with pytest.raises(ValueError, match="must be callable"):
        register_op("not_callable_op", 5)
    assert "not_callable_op" not in OPS


def test_register_op_as_decorator():
    try:

        @register_op("my_decorated_op")
        def factory(C_in, C_out, stride, affine):
            return nn.Conv2d(C_in, C_out, 1, stride)

        assert OPS["my_decorated_op"] is factory
        assert build_op("my_decorated_op", C, C, 1, True)(torch.randn(1, C, 4, 4)).shape == (1, C, 4, 4)
    finally:
        OPS.pop("my_decorated_op", None)
    assert "my_decorated_op" not in OPS


def test_user_op_in_nb201_supernet_and_network(my_op):
    torch.manual_seed(0)
    ops = ["none", "skip_connect", my_op]
    net = nas.build_supernet("nb201", "gdas", C=4, N=1, num_classes=3, ops=ops)
    assert net.ops == tuple(ops) and net.arch["normal"].shape == (6, 3)
    cell = net.net.cells[0]
    assert all(isinstance(edge.candidates[my_op], nn.Sequential) for edge in cell.edges)
    assert all(isinstance(edge.candidates[my_op][1], nn.Conv2d) for edge in cell.edges)
    x = torch.randn(2, 3, 16, 16)
    net(x).sum().backward()
    # Push every edge to the user op: the derived genotype uses it and builds.
    with torch.no_grad():
        net.arch["normal"].zero_()
        net.arch["normal"][:, 2] = 10.0
    geno = net.genotype()
    assert [op for op, _ in geno.normal] == [my_op] * len(nb201_edges())
    model = nas.build_network(geno, C=4, N=1, num_classes=3)
    assert model(x).shape == (2, 3)
    assert any(
        isinstance(m, nn.Sequential) and isinstance(m[1], nn.Conv2d) and m[1].kernel_size == (3, 3)
        for m in model.cells[0].edges
    )


def test_user_op_in_darts_supernet_and_network(my_op):
    torch.manual_seed(0)
    ops = ["none", "skip_connect", my_op]
    net = nas.build_supernet("darts", "gdas", C=4, N=3, num_classes=3, ops=ops)
    assert net.arch["normal"].shape == (14, 3) and net.arch["reduce"].shape == (14, 3)
    x = torch.randn(2, 3, 16, 16)
    net(x).sum().backward()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.zero_()
            a[:, 2] = 10.0
    geno = net.genotype()
    assert {op for op, _ in geno.normal + geno.reduce} == {my_op}
    model = nas.build_network(geno, C=4, N=3, num_classes=3)
    model(x).sum().backward()
    discrete = net.discretize(geno)
    assert discrete(x).shape == (2, 3)
