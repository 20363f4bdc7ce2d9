"""Any model with :class:`nas.OpChoice` / :class:`nas.InputChoice` as a one-path Gumbel supernet.

:class:`ModelSupernet` (built by :meth:`nas.Supernet.from_model`) wraps a user's
``nn.Module``. It finds every choice, owns their logits and, before each
forward, draws what every choice does:

* ``gdas`` (default): one hard Gumbel-softmax sample per label. Only the chosen
  candidate runs, forward and backward; its output passes through the
  straight-through weight of the chosen entry (exactly 1 going forward), which
  carries the soft sample's gradient to every logit of the label.
* ``snas``: soft Gumbel-softmax weights over all candidates; ``darts``: softmax weights.

The logits are one ``[labels, width]`` tensor, a row per label in the order of
:attr:`ModelSupernet.labels`, ``width`` the most candidates any label has;
entries past a label's own candidates are masked (``alive`` false, logit
``-inf``), so every per-row rule of the base class (pruning, probabilities,
beta-decay) holds for labels of any size. The whole draw is one sampler call
and one host transfer per forward, whatever the number of choices.

    import nas
    net = nas.Supernet.from_model(my_model, mode="gdas")
    out = net(x)                      # one sampled path
    arch = net.export()               # {label: candidate name}, argmax of the logits
    fixed = nas.fix(net, arch)        # a plain nn.Module, weights kept

An ``InputChoice`` with ``n_chosen > 1`` is drawn by Gumbel-top-k (a draw
without replacement, exact for the probabilities), with the straight-through
gradient; a supernet holding one draws every label that way, with the ``st``
estimator only.

From the command line or a config, ``supernet.model: "package.module:function"``
names a function returning such a model (:func:`build_model`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .architecture import ChoiceArchitecture, Chosen, save_architecture
from .choice import RowPlan, _chosen_names, choice_labels, label_mismatch
from .errors import UserError
from .fix import fix
from .sampler import gumbel_max, gumbel_softmax
from .supernet import Supernet

ARCH_FILE = "architecture.json"  # what a search of a custom model writes in its run directory
CELL = "choices"  # the one key of the base class's per-cell-type logits and masks
NO_CHOICES = (
    "the model holds no nas.OpChoice or nas.InputChoice, so there is nothing to search; "
    'add at least one, e.g. self.conv = nas.OpChoice({"k3": conv3, "k5": conv5})'
)


class ModelSupernet(Supernet, wraps_models=True):
    """A user's model with choices, searched as a one-path supernet (see the module's docstring).

    Args:
        model: an ``nn.Module`` holding at least one :class:`nas.OpChoice` or :class:`nas.InputChoice`.
        mode: ``gdas``, ``snas`` or ``darts``.
        tau: the Gumbel-softmax temperature (gdas, snas).

    Example:
        >>> import torch, nas
        >>> from torch import nn
        >>> model = nn.Sequential(nas.OpChoice({"a": nn.Linear(4, 4), "b": nn.Identity()}, label="op"))
        >>> net = nas.Supernet.from_model(model)
        >>> net(torch.randn(2, 4)).shape, net.labels
        (torch.Size([2, 4]), ('op',))
    """

    space = "custom"

    def __init__(self, model: nn.Module, mode: str = "gdas", tau: float = 1.0):
        if not isinstance(model, nn.Module):
            raise TypeError(f"from_model takes an nn.Module, got {type(model).__name__}")
        if isinstance(model, Supernet):
            raise ValueError("the model is a supernet already; pass the model it wraps")
        groups = choice_labels(model)
        if not groups:
            raise ValueError(NO_CHOICES)
        first = [choices[0] for choices in groups.values()]
        if mode != "gdas":
            for label, c in zip(groups, first):
                if getattr(c, "reduction", None) == "concat":
                    raise ValueError(
                        f"InputChoice {label!r} concatenates its chosen inputs, whose shape depends on the draw: "
                        f"mode {mode!r} mixes every input; use mode='gdas' or reduction='sum'/'mean'"
                    )
        width = max(len(c.names) for c in first)
        super().__init__(mode, [str(k) for k in range(width)], {CELL: len(groups)}, tau=tau)
        self.model = model
        self.labels: Tuple[str, ...] = tuple(groups)
        self.candidates: Dict[str, Tuple[str, ...]] = {label: c.names for label, c in zip(groups, first)}
        self.n_chosen: Tuple[int, ...] = tuple(c.n_chosen for c in first)
        self._top_k = max(self.n_chosen) > 1
        with torch.no_grad():  # a label's entries past its own candidates never run
            self.alive(CELL).copy_(self._unpruned(CELL))
        self._refresh_alive_cache()  # now, on the host: not in the first forward
        for r, (label, choices) in enumerate(groups.items()):
            for c in choices:
                c._row, c._draw, c._bound_label = r, self._draw_state, label

    def _unpruned(self, cell: str) -> torch.Tensor:
        """Every candidate alive, and no entry past a label's own candidates (a narrower label's padding)."""
        widths = torch.tensor([len(self.candidates[label]) for label in self.labels], device=self.alive(cell).device)
        return torch.arange(self.alive(cell).shape[1], device=widths.device)[None, :] < widths[:, None]

    # ---- the forward ----------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward, with this forward's draw set for every choice."""
        with self.draw():
            return self.model(*args, **kwargs)

    def _draw_rows(self) -> List[RowPlan]:
        """Draw this forward's architecture: one plan per label."""
        if self._forced is not None:
            self.last_sample = self._named(self._forced)
            self.last_index = None
            return [RowPlan(chosen, None) for chosen in self._forced]
        a = self.logits(CELL)
        if self.mode != "gdas":
            w = gumbel_softmax(a, tau=self.tau, hard=False) if self.mode == "snas" else torch.softmax(a, dim=-1)
            alive = self._alive_rows[CELL]
            self.last_sample = None
            self.last_index = None
            return [RowPlan(None, row.unbind(0), alive[r]) for r, row in enumerate(w.unbind(0))]
        need_grad = torch.is_grad_enabled() and a.requires_grad
        if self._uniform_paths and not need_grad:  # equal logits on the alive entries
            a = torch.zeros_like(a).masked_fill(a == float("-inf"), float("-inf"))
        index = None  # top-k draws are not scored (their probability is not one softmax entry)
        if self._top_k:
            rows = self._draw_top_k(a, need_grad)
        elif need_grad:
            hard = gumbel_softmax(a, tau=self.tau, hard=True, estimator=self.estimator, samples=self.estimator_samples)
            index = hard.argmax(dim=-1)
            flat = index.tolist()  # the one host-device transfer of the forward
            weights = hard.gather(1, index[:, None]).squeeze(1).unbind(0)
            rows = [RowPlan([k], (w,)) for k, w in zip(flat, weights)]
        else:
            # Frozen logits (the weight step): only the indices are needed; gumbel_max draws the
            # same noise as the hard sample's argmax without building the one-hot.
            index = gumbel_max(a)
            rows = [RowPlan([k], None) for k in index.tolist()]
        uniform = self._uniform_paths and not need_grad
        self.last_index = None if index is None or uniform else {CELL: index}
        self.last_sample = self._named([r.chosen for r in rows])
        return rows

    def _draw_top_k(self, a: torch.Tensor, need_grad: bool) -> List[RowPlan]:
        """Gumbel-top-k: the ``n_chosen`` largest of ``logits + G`` per label, a draw without replacement."""
        if self.estimator != "st":
            raise ValueError(
                "an InputChoice with n_chosen > 1 is drawn with the 'st' estimator only; set estimator='st'"
            )
        with torch.no_grad():
            # log softmax(G) = G - logsumexp(G): the sampler's Gumbel noise up to a per-row constant,
            # which changes no ranking and no softmax. float64: no entry underflows to -inf.
            noise = gumbel_softmax(torch.zeros(a.shape, dtype=torch.float64, device=a.device), tau=1.0).log_()
        z = a.double() + noise
        order = z.detach().topk(max(self.n_chosen), dim=-1).indices
        flat = order.tolist()  # the one host-device transfer of the forward
        soft = None
        if need_grad:  # straight-through: exactly 1 going forward (ops that fold it in scale by it), softmax's gradient
            s = torch.softmax(z / self.tau, dim=-1).gather(1, order)
            soft = (s - s.detach() + 1.0).to(a.dtype).unbind(0)  # the logits' dtype: ops fold it into BN weights
        rows = []
        for r, n in enumerate(self.n_chosen):
            picked = sorted(zip(flat[r][:n], range(n)))  # input order, with each pick's position in order
            weights = None if soft is None else tuple(soft[r][j] for _, j in picked)
            rows.append(RowPlan([k for k, _ in picked], weights))
        return rows

    def _named(self, chosen: Sequence[Sequence[int]]) -> Dict[str, Chosen]:
        out: Dict[str, Chosen] = {}
        for label, n, ks in zip(self.labels, self.n_chosen, chosen):
            names = [self.candidates[label][k] for k in ks]
            out[label] = names[0] if n == 1 else names
        return out

    def sample_architecture(self) -> Optional[Dict[str, Chosen]]:
        """Draw one architecture as a forward does, without running the model (``None`` in soft modes)."""
        self._draw_rows()
        return self.last_sample

    # ---- forcing an architecture -------------------------------------------------
    def arch_of_rows(self, rows: Dict[str, List[int]]) -> Dict[str, Chosen]:
        """``{label: name}`` for one candidate index per label (``rows[CELL]``)."""
        if self._top_k:
            raise ValueError("an InputChoice with n_chosen > 1 draws several candidates; a row index names one")
        return self._named([[k] for k in rows[CELL]])

    def rows_of(self, arch: Union[Mapping[str, Chosen], ChoiceArchitecture]) -> Dict[str, List[int]]:
        """The candidate index per label (``{CELL: [...]}``) of ``{label: name}``: :meth:`arch_of_rows`'s inverse."""
        if self._top_k:
            raise ValueError("an InputChoice with n_chosen > 1 takes several candidates; a row index names one")
        return {CELL: [row[0] for row in self._indices(arch)]}

    def force(self, arch: Union[Mapping[str, Chosen], ChoiceArchitecture, None]) -> None:
        """Run every forward with this architecture (``{label: name}``; ``None`` returns to sampling)."""
        if arch is None:
            self._forced = None
            return
        self._forced = self._indices(arch)

    def _indices(self, arch: Union[Mapping[str, Chosen], ChoiceArchitecture]) -> List[List[int]]:
        if isinstance(arch, ChoiceArchitecture):
            arch = arch.choices
        if not isinstance(arch, Mapping):
            raise TypeError(f"an architecture is a dict label -> candidate name, got {type(arch).__name__}")
        missing = [label for label in self.labels if label not in arch]
        unknown = [label for label in arch if label not in self.candidates]
        if missing or unknown:
            raise ValueError(
                f"the architecture does not fit the model: missing labels {missing}, unknown labels {unknown}; "
                f"the model's labels are {list(self.labels)}"
            )
        out = []
        for label, n in zip(self.labels, self.n_chosen):
            names = self.candidates[label]
            out.append([names.index(v) for v in _chosen_names(arch[label], label, names, n)])
        return out

    # ---- reading the logits ------------------------------------------------------
    def choice_probabilities(self) -> Dict[str, Dict[str, float]]:
        """label -> candidate name -> probability (softmax of the logits, pruned candidates at 0)."""
        rows = self.probabilities()[CELL].tolist()
        return {
            label: dict(zip(self.candidates[label], row[: len(self.candidates[label])]))
            for label, row in zip(self.labels, rows)
        }

    def probability_record(self) -> Dict[str, Any]:
        """What ``arch_probs.jsonl`` logs per epoch."""
        return {"choices": self.choice_probabilities()}

    def export(self, path: Optional[Union[str, Path]] = None) -> Dict[str, Chosen]:
        """``{label: candidate name}``: per label the most probable candidate (the ``n_chosen`` most
        probable, in input order, for an ``InputChoice`` with ``n_chosen > 1``). With ``path``, also
        written there as JSON (atomically; :func:`nas.load_architecture` reads it back)."""
        logits = self.logits(CELL).detach().float().tolist()
        chosen = []
        for label, n, row in zip(self.labels, self.n_chosen, logits):
            k = len(self.candidates[label])
            best = sorted(range(k), key=lambda j: (-row[j], j))[:n]  # ties: the first candidate
            chosen.append(sorted(best))
        arch = self._named(chosen)
        if path is not None:
            save_architecture(arch, path)
        return arch

    def genotype(self, scores: Optional[Dict[str, torch.Tensor]] = None) -> ChoiceArchitecture:
        """The derived architecture with its probabilities (what a search logs): :meth:`export`, or
        per label the candidate ranked highest by ``scores`` (``[labels, width]`` under ``"choices"``;
        every choice picks one candidate)."""
        if scores is None:
            return ChoiceArchitecture(self.export(), self.choice_probabilities())
        if any(n != 1 for n in self.n_chosen):
            raise ValueError("deriving by scores picks one candidate per choice; an InputChoice has n_chosen > 1")
        rows = scores[CELL].tolist()
        chosen = [
            [max(range(len(self.candidates[lb])), key=lambda j: (row[j], -j))] for lb, row in zip(self.labels, rows)
        ]
        return ChoiceArchitecture(self._named(chosen), self.choice_probabilities())

    # ---- pruning ---------------------------------------------------------------
    def prune(self, label: str, name: str) -> None:
        """Never draw candidate ``name`` of ``label`` again (its probability becomes exactly 0)."""
        if label not in self.candidates or name not in self.candidates[label]:
            raise ValueError(f"no candidate {name!r} under label {label!r}; labels: {self.candidates}")
        r, k = self.labels.index(label), self.candidates[label].index(name)
        alive = self.alive(CELL)
        if int(alive[r].sum()) <= self.n_chosen[r]:
            raise ValueError(f"{label!r} keeps {self.n_chosen[r]} candidate(s) at least; {name!r} cannot go")
        alive[r, k] = False
        self._alive_cache = None

    def prune_weakest(
        self, keep_none: bool = True, scores: Optional[Dict[str, torch.Tensor]] = None
    ) -> Dict[str, List[str]]:
        """Per label with candidates to spare, remove the one with the lowest score (default: probability).
        Returns the removed name per label (``""`` where none was)."""
        p = (self.probabilities() if scores is None else scores)[CELL]
        alive, removed = self.alive(CELL), []
        for r, label in enumerate(self.labels):
            left = alive[r].nonzero().flatten().tolist()
            if len(left) <= self.n_chosen[r]:
                removed.append("")
                continue
            k = min(left, key=lambda j: float(p[r, j]))
            alive[r, k] = False
            removed.append(self.candidates[label][k])
        self._alive_cache = None
        return {CELL: removed}

    def num_alive(self) -> int:
        """The most candidates any label can still choose between, counted as for one pick (1: decided)."""
        counts = self.alive(CELL).sum(dim=-1).tolist()
        return max(int(c) - n + 1 for c, n in zip(counts, self.n_chosen))

    def extra_repr(self) -> str:
        return f"mode={self.mode}, tau={self.tau:g}, labels={list(self.labels)}"


# ---- the command line's supernet.model ------------------------------------------------
def load_model_factory(spec: str) -> Callable[..., nn.Module]:
    """The function ``"package.module:function"`` names (``supernet.model``); UserError if there is none.

    Example:
        >>> load_model_factory("torch.nn:Identity")
        <class 'torch.nn.modules.linear.Identity'>
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"supernet.model must look like package.module:function, got {spec!r}")
    try:
        obj: Any = _import_here(module_name)
    except Exception as exc:  # the user's module may fail in any way; say which, on one line
        raise UserError(
            f"cannot import {module_name!r} for supernet.model ({type(exc).__name__}: {exc}); "
            "make the module importable (install it, or add its folder to PYTHONPATH)"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{module_name!r} has no {attr!r} (supernet.model {spec!r}); check the name")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"supernet.model {spec!r} is a {type(obj).__name__}, not a function returning an nn.Module")
    return obj


def _import_here(module_name: str) -> Any:
    """Import ``module_name``; a module in the current folder is found too, whichever way the
    program was started (``python search.py`` puts the script's folder on the path, the installed
    ``gumbel-nas`` command puts none)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        here = os.getcwd()
        if exc.name != module_name.split(".")[0] or here in sys.path or "" in sys.path:
            raise
        sys.path.insert(0, here)  # kept once found: the module's own later imports need it
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as again:
            if again.name == exc.name:  # not here either
                sys.path.remove(here)
            raise


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` accepts the keyword argument ``name`` (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def build_model(spec: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Call the ``supernet.model`` function: with ``num_classes=`` when it takes that argument
    (and with ``kwargs``, which the caller has checked it takes)."""
    fn = load_model_factory(spec)
    if _takes(fn, "num_classes"):
        kwargs["num_classes"] = num_classes
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(f"supernet.model {spec!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def model_supernet(spec: str, mode: str, num_classes: int, tau: float) -> ModelSupernet:
    """The supernet of the ``supernet.model`` function's model; UserError when it has no choices."""
    try:
        return ModelSupernet(build_model(spec, num_classes), mode=mode, tau=tau)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(f"supernet.model {spec!r}: {exc}") from None


def build_chosen_model(spec: str, arch: Mapping[str, Chosen], num_classes: int) -> Tuple[nn.Module, str]:
    """The network ``arch`` chooses of the ``supernet.model`` function's model, with fresh weights (a retrain).

    The function's model with choices is built to check that ``arch`` fits it (every label, known
    candidates). Then, when the function takes ``arch``, it builds the chosen network from scratch
    (``function(num_classes=..., arch=arch)``, the way :func:`nas.op_choice` serves both); a choice
    it still returns, and the whole model when it takes no ``arch``, is replaced by its chosen
    candidate with :func:`nas.fix`, on the model just built (fresh weights). Returns the network
    and a line saying which way it was built. UserError when ``arch`` does not fit the model.
    """

    def user_error(exc: Exception) -> UserError:
        return UserError(f"supernet.model {spec!r}: {exc}")

    try:
        groups = choice_labels(build_model(spec, num_classes))
    except ValueError as exc:  # a nested choice, choices sharing a label that differ
        if isinstance(exc, UserError):
            raise
        raise user_error(exc) from None
    if not groups:
        raise UserError(f"supernet.model {spec!r}: {NO_CHOICES}")
    mismatch = label_mismatch(groups, arch)
    if mismatch:
        raise UserError(
            f"the architecture does not fit supernet.model {spec!r}: {mismatch}. Retrain the run that searched this model"
        )
    try:
        for label, choices in groups.items():
            _chosen_names(arch[label], label, choices[0].names, choices[0].n_chosen)
        if _takes(load_model_factory(spec), "arch"):
            model = build_model(spec, num_classes, arch=dict(arch))
            left = choice_labels(model)
            if not left:
                return model, f"built {spec}(arch=...) from scratch"
            model = fix(model, {label: arch[label] for label in left})
            return model, (
                f"built {spec}(arch=...) from scratch; it still held the choices {list(left)}, "
                "replaced by their chosen candidates with nas.fix (fresh weights)"
            )
        model = fix(build_model(spec, num_classes), arch)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, UserError):
            raise
        raise user_error(exc) from None
    return model, f"{spec} takes no arch: built its model afresh and fixed it with nas.fix (fresh weights)"
