"""Architecture choices inside any PyTorch model: :class:`OpChoice` and :class:`InputChoice`.

A choice is a module that stands where a user would otherwise write one fixed
module (``OpChoice``: one of several candidate modules) or one fixed combination
of tensors (``InputChoice``: ``n_chosen`` of ``n_candidates`` inputs). It holds
the candidates and nothing of the search: :func:`nas.Supernet.from_model` finds
the choices, owns their logits and, before every forward, tells each choice
which candidate(s) to run (gdas, or a forced architecture) or with which weights
to mix them (snas, darts). :func:`nas.fix` replaces each choice by what it chose.

    import nas
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nas.OpChoice({"k3": nn.Conv2d(c, c, 3, padding=1), "k5": nn.Conv2d(c, c, 5, padding=2)})

        def forward(self, x):
            return self.conv(x)

    net = nas.Supernet.from_model(nn.Sequential(Block(8), Block(8)), mode="gdas")

Choices with the same ``label`` share one row of logits and one sample per
forward (their candidates must agree); a choice without a label is labelled by
its path in the model (``"0.conv"`` above). A choice inside another choice's
candidate is refused: the inner choice's row would be trained only on the
forwards that pick the outer candidate, and ``fix`` could not name it.

:func:`op_choice` and :func:`input_choice` build either the choice (``arch`` is
``None``) or, given an architecture, the chosen module alone, so one model
function serves the search and the from-scratch build of the result.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

REDUCTIONS = ("sum", "mean", "concat")

Candidate = Union[nn.Module, Callable[[], nn.Module]]


class _StraightThroughScale(torch.autograd.Function):
    """``y * w`` for a hard one-hot entry ``w``, which is exactly 1 going forward.

    Returns ``y`` (a view) or, with ``copy``, a copy: one elementwise pass, not the multiply's
    two; the backward is that of ``y * w`` at ``w = 1``. A model that changes the choice's
    output in place (``nn.ReLU(inplace=True)``, ``out += x``) needs the copy: autograd refuses
    that on a view made here, and it would change the ``y`` the backward reads.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, w: torch.Tensor, copy: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(y)
        ctx.w_dtype = w.dtype
        return y.clone() if copy else y.view_as(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        grad_w = None
        if ctx.needs_input_grad[1]:
            # d(y*w)/dw = <grad, y>; accumulate in float32 at least, whatever autocast chose.
            acc = torch.promote_types(grad.dtype, torch.float32)
            grad_w = torch.sum(grad * y, dtype=acc).to(ctx.w_dtype)
        return grad, grad_w, None


class RowPlan:
    """What one choice does in this forward; set by the supernet before the model runs.

    ``chosen``: the candidate indices to run (ascending; gdas or a forced architecture).
    ``weights``: with ``chosen``, one straight-through scalar per chosen index (exactly 1 going
    forward; ``None`` when the logits need no gradient); without it, one weight per candidate
    (snas, darts). ``alive``: soft modes after pruning, whether each candidate may still run.
    """

    __slots__ = ("chosen", "weights", "alive")

    def __init__(
        self,
        chosen: Optional[List[int]],
        weights: Optional[Sequence[torch.Tensor]],
        alive: Optional[List[bool]] = None,
    ):
        self.chosen = chosen
        self.weights = weights
        self.alive = alive


class DrawState:
    """The plans of the current forward, shared by a supernet and its choices (a plain object, so
    it is neither a submodule nor in the state dict)."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: Optional[List[RowPlan]] = None


def scale_straight_through(y: torch.Tensor, w: torch.Tensor, copy: bool = True) -> torch.Tensor:
    """``y`` going forward (a copy, unless ``copy`` is False: then the model must not change it in
    place); in the backward, ``w`` gets the gradient of ``y * w`` at ``w = 1``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(
            f"a chosen candidate returned {type(y).__name__}; in gdas mode a candidate must return one "
            "tensor so its logits get a gradient"
        )
    return _StraightThroughScale.apply(y, w, copy)


class Choice(nn.Module):
    """What :class:`OpChoice` and :class:`InputChoice` share: a label, candidate names, how many
    candidates one forward uses, and the plan the owning supernet sets."""

    kind = ""

    def __init__(self, names: Sequence[str], n_chosen: int, label: Optional[str]):
        super().__init__()
        if label is not None and (not isinstance(label, str) or not label):
            raise ValueError(f"a choice's label must be a non-empty string or None, got {label!r}")
        self.label = label
        self.names: Tuple[str, ...] = tuple(names)
        self.n_chosen = n_chosen
        # Set by the supernet that owns the choice (nas.model_supernet): its row, the shared draw, and
        # the label it goes by there (its path when it has no label of its own).
        self._row: Optional[int] = None
        self._draw: Optional[DrawState] = None
        self._bound_label: Optional[str] = None

    def _name(self) -> str:
        """How errors name this choice: its label, else the label its supernet gave it."""
        name = self.label or self._bound_label
        return repr(name) if name else "(unlabelled, not in a supernet)"

    def signature(self) -> Tuple:
        """What choices sharing a label must agree on."""
        return (self.kind, self.names, self.n_chosen)

    def _plan(self) -> RowPlan:
        draw = self._draw
        if draw is None or draw.rows is None:
            raise RuntimeError(
                f"{type(self).__name__} {self._name()} ran outside its supernet's forward; wrap the model with "
                "nas.Supernet.from_model(model) and call that (a model wrapped twice answers to the latest wrapper "
                "only), or build the chosen network with nas.fix(model, arch)"
            )
        return draw.rows[self._row]

    def extra_repr(self) -> str:
        return f"label={self.label!r}, candidates={list(self.names)}" + (
            f", n_chosen={self.n_chosen}" if self.n_chosen != 1 else ""
        )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"candidate names must be non-empty strings without '.', got {name!r}; rename it")
    return name


class OpChoice(Choice):
    """One of several candidate modules, chosen by the search.

    Args:
        candidates: name -> module (a dict), or a list of modules (named ``"0"``, ``"1"``, ...).
            Every candidate takes the same inputs; their outputs must have one shape (the soft
            modes add them up).
        label: choices with the same label share one row of logits and one sample per forward;
            ``None``: the choice's path in the model.
        zero_as_none: a candidate whose class sets ``structural_zero = True`` (``nas.ops.Zero``,
            the ``none`` op) is never run: chosen, the choice returns ``None``, and the soft modes
            skip it. For cells that sum their edges and treat ``None`` as an exact zero (the
            built-in spaces); off, such a candidate runs like any other.
        copy_output: in a gdas step that trains the logits, a candidate that does not fold the
            weight in (below) gives the model a copy of its output, so the model may change it
            in place (``nn.ReLU(inplace=True)``, ``out += x``). False saves that pass where the
            model never does (the built-in cells).

    A candidate whose class sets ``accepts_scale = True`` (the built-in ops ending in a batch
    norm) takes the candidate's weight as an extra last argument and folds it into that norm:
    the same values and gradients as ``weight * candidate(x)``, one feature map less.

    Example:
        >>> import nas
        >>> from torch import nn
        >>> choice = nas.OpChoice({"k3": nn.Conv2d(4, 4, 3, padding=1), "skip": nn.Identity()}, label="op")
        >>> choice.names
        ('k3', 'skip')
    """

    kind = "op"

    def __init__(
        self,
        candidates: Union[Mapping[str, nn.Module], Sequence[nn.Module]],
        label: Optional[str] = None,
        zero_as_none: bool = False,
        copy_output: bool = True,
    ):
        if isinstance(candidates, Mapping):
            items = [(_check_name(k), v) for k, v in candidates.items()]
        elif isinstance(candidates, (list, tuple, nn.ModuleList)):
            items = [(str(k), v) for k, v in enumerate(candidates)]
        else:
            raise TypeError(
                f"OpChoice takes a dict name -> module or a list of modules, got {type(candidates).__name__}"
            )
        if len(items) < 2:
            raise ValueError(f"an OpChoice needs at least 2 candidates, got {len(items)}; use the module itself")
        for name, module in items:
            if not isinstance(module, nn.Module):
                raise TypeError(f"candidate {name!r} is a {type(module).__name__}, not an nn.Module")
        super().__init__([name for name, _ in items], 1, label)
        self.candidates = nn.ModuleDict(dict(items))
        # Per candidate, fixed at construction (host bools: no per-forward attribute lookups).
        self._zero = tuple(bool(zero_as_none and getattr(m, "structural_zero", False)) for _, m in items)
        self._scale_in = tuple(bool(getattr(m, "accepts_scale", False)) for _, m in items)
        self._copy = bool(copy_output)

    def forward(self, *args, **kwargs):
        plan = self._plan()
        if plan.chosen is not None:
            k = plan.chosen[0]
            if self._zero[k]:
                return None
            candidate = self.candidates[self.names[k]]
            if plan.weights is None:
                return candidate(*args, **kwargs)
            if self._scale_in[k]:
                return candidate(*args, plan.weights[0], **kwargs)
            return scale_straight_through(candidate(*args, **kwargs), plan.weights[0], self._copy)
        out = None
        for k, name in enumerate(self.names):
            if self._zero[k] or (plan.alive is not None and not plan.alive[k]):
                continue  # a structural zero, or pruned: weight exactly 0
            w = plan.weights[k]
            candidate = self.candidates[name]
            y = candidate(*args, w, **kwargs) if self._scale_in[k] else w * candidate(*args, **kwargs)
            if out is not None and y.shape != out.shape:  # a sum would broadcast it silently
                raise ValueError(
                    f"OpChoice {self._name()}: candidate {name!r} returns shape {tuple(y.shape)}, an earlier one "
                    f"{tuple(out.shape)}; every candidate of a choice must return one shape"
                )
            out = y if out is None else out + y
        return out


class InputChoice(Choice):
    """``n_chosen`` of ``n_candidates`` input tensors, combined by ``reduction``.

    Args:
        n_candidates: how many tensors ``forward`` takes (as one list); candidates are named
            ``"0"``, ``"1"``, ... by position.
        n_chosen: how many of them one forward uses (gdas draws them without replacement).
        reduction: ``"sum"``, ``"mean"`` or ``"concat"`` (along dim 1, in input order) of the
            chosen tensors. The soft modes (snas, darts) mix every input with its weight, scaled
            by ``n_chosen`` for ``"sum"``; ``"concat"`` is gdas only.
        label: as :class:`OpChoice`.

    Example:
        >>> import nas, torch
        >>> choice = nas.InputChoice(3, n_chosen=2, reduction="sum", label="skip")
        >>> choice.names
        ('0', '1', '2')
    """

    kind = "input"

    def __init__(self, n_candidates: int, n_chosen: int = 1, reduction: str = "sum", label: Optional[str] = None):
        if not isinstance(n_candidates, int) or n_candidates < 2:
            raise ValueError(f"an InputChoice needs n_candidates >= 2, got {n_candidates!r}")
        if not isinstance(n_chosen, int) or not 1 <= n_chosen < n_candidates:
            raise ValueError(f"n_chosen must be in [1, n_candidates - 1] = [1, {n_candidates - 1}], got {n_chosen!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; choose one of: {', '.join(REDUCTIONS)}")
        super().__init__([str(k) for k in range(n_candidates)], n_chosen, label)
        self.n_candidates = n_candidates
        self.reduction = reduction

    def signature(self) -> Tuple:
        return super().signature() + (self.reduction,)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(inputs) != self.n_candidates:
            raise ValueError(f"InputChoice {self._name()} takes {self.n_candidates} tensors, got {len(inputs)}")
        plan = self._plan()
        if plan.chosen is not None:
            picked = [inputs[k] for k in plan.chosen]
            if plan.weights is not None:
                picked = [scale_straight_through(x, w) for x, w in zip(picked, plan.weights)]
            return reduce_inputs(picked, self.reduction)
        out = None
        for k, x in enumerate(inputs):
            if plan.alive is not None and not plan.alive[k]:
                continue
            y = plan.weights[k] * x
            out = y if out is None else out + y
        return out * self.n_chosen if self.reduction == "sum" and self.n_chosen > 1 else out


def reduce_inputs(tensors: List[torch.Tensor], reduction: str) -> torch.Tensor:
    """``sum``, ``mean`` or ``concat`` (dim 1) of the chosen inputs, in input order."""
    if reduction == "concat":
        return torch.cat(tensors, dim=1)
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out / len(tensors) if reduction == "mean" and len(tensors) > 1 else out


class ChosenInputs(nn.Module):
    """What :func:`nas.fix` leaves of an :class:`InputChoice`: the chosen inputs, reduced. No search code.

    Example:
        >>> import torch
        >>> pick = ChosenInputs([0, 2], "sum")
        >>> pick([torch.ones(1), torch.zeros(1), torch.ones(1)])
        tensor([2.])
    """

    def __init__(self, indices: Sequence[int], reduction: str):
        super().__init__()
        self.indices = [int(k) for k in sorted(indices)]
        self.reduction = reduction

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return reduce_inputs([inputs[k] for k in self.indices], self.reduction)

    def extra_repr(self) -> str:
        return f"indices={self.indices}, reduction={self.reduction!r}"


def _chosen_names(value: object, label: str, names: Sequence[str], n_chosen: int) -> List[str]:
    """The candidate names an architecture gives ``label`` (a name, an index, or a list of them)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(names):
            v = names[v]
        if v not in names:
            raise ValueError(f"architecture gives {label!r} the candidate {v!r}; choose from {list(names)}")
        out.append(v)
    if len(set(out)) != n_chosen:
        raise ValueError(f"architecture gives {label!r} {len(set(out))} distinct candidate(s); it takes {n_chosen}")
    return sorted(out, key=names.index)


def op_choice(
    label: str,
    candidates: Mapping[str, Candidate],
    arch: Optional[Mapping[str, object]] = None,
    zero_as_none: bool = False,
    copy_output: bool = True,
) -> nn.Module:
    """An :class:`OpChoice` labelled ``label`` (``arch`` is ``None``), else the candidate ``arch[label]``.

    So one model function builds the supernet and, given a searched architecture, the fixed
    network from scratch, with the state-dict keys :func:`nas.fix` gives. A candidate may be a
    module or a function returning one; with ``arch``, only the chosen function is called.
    ``zero_as_none`` and ``copy_output`` are :class:`OpChoice`'s.

    Example:
        >>> import nas
        >>> from torch import nn
        >>> ops = {"k3": lambda: nn.Conv2d(4, 4, 3, padding=1), "skip": nn.Identity}
        >>> type(nas.op_choice("op", ops)).__name__, type(nas.op_choice("op", ops, {"op": "skip"})).__name__
        ('OpChoice', 'Identity')
    """
    names = [_check_name(k) for k in candidates]
    if arch is None:
        built = {k: v if isinstance(v, nn.Module) else v() for k, v in candidates.items()}
        return OpChoice(built, label=label, zero_as_none=zero_as_none, copy_output=copy_output)
    if label not in arch:
        raise ValueError(f"the architecture has no entry for {label!r}; it has {sorted(arch)}")
    (name,) = _chosen_names(arch[label], label, names, 1)
    chosen = candidates[name]
    return chosen if isinstance(chosen, nn.Module) else chosen()


def input_choice(
    label: str,
    n_candidates: int,
    n_chosen: int = 1,
    reduction: str = "sum",
    arch: Optional[Mapping[str, object]] = None,
) -> nn.Module:
    """An :class:`InputChoice` (``arch`` is ``None``), else the :class:`ChosenInputs` of ``arch[label]``.

    Example:
        >>> import nas
        >>> nas.input_choice("skip", 3, arch={"skip": "2"})
        ChosenInputs(indices=[2], reduction='sum')
    """
    choice = InputChoice(n_candidates, n_chosen, reduction, label=label)  # validates the arguments
    if arch is None:
        return choice
    if label not in arch:
        raise ValueError(f"the architecture has no entry for {label!r}; it has {sorted(arch)}")
    names = _chosen_names(arch[label], label, choice.names, n_chosen)
    return ChosenInputs([choice.names.index(n) for n in names], reduction)


def find_choices(model: nn.Module) -> List[Tuple[str, Choice]]:
    """Every choice in ``model`` with its path, in module order; a choice nested in another's
    candidate is refused (ValueError)."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, Choice)]
    for name, outer in found:
        for inner_name, inner in outer.named_modules():
            if inner is not outer and isinstance(inner, Choice):
                raise ValueError(
                    f"choice {inner.label or inner_name!r} sits inside a candidate of choice {outer.label or name!r}; "
                    "nested choices are not supported: move the inner choice out of the candidate, or make the "
                    "combinations candidates of one choice"
                )
    return found


def label_mismatch(labels: Iterable[str], arch: Mapping[str, Any]) -> Optional[str]:
    """Why ``arch`` does not fit a model with these choice labels (``None``: it fits)."""
    labels = list(labels)
    missing = [label for label in labels if label not in arch]
    unknown = [label for label in arch if label not in labels]
    if not missing and not unknown:
        return None
    return f"missing labels {missing}, unknown labels {unknown}; the model's labels are {labels}"


def choice_labels(model: nn.Module) -> Dict[str, List[Choice]]:
    """label -> the choices sharing it (a choice without a label is labelled by its path)."""
    groups: Dict[str, List[Choice]] = {}
    found = find_choices(model)
    explicit = {choice.label for _, choice in found if choice.label}
    for name, choice in found:
        label = choice.label or name or "choice"  # "": the model is itself a choice
        if not choice.label and label in explicit:
            raise ValueError(
                f"the unlabelled choice at {label!r} would share the row of the choice labelled {label!r}; "
                "give one of them another label"
            )
        first = groups.setdefault(label, [choice])[0]
        if first is not choice:
            if first.signature() != choice.signature():
                raise ValueError(
                    f"choices labelled {label!r} differ ({first.kind} {list(first.names)} vs "
                    f"{choice.kind} {list(choice.names)}); choices sharing a label need the same candidates"
                )
            groups[label].append(choice)
    return groups
