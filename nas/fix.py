"""From a searched model to a plain network: :func:`fix` replaces every choice by what it chose.

The result holds no search code: each :class:`nas.OpChoice` becomes its chosen
candidate (with the weights it has), each :class:`nas.InputChoice` a
:class:`nas.choice.ChosenInputs`. Its state-dict keys are those of the same
architecture built from scratch by a model function that takes ``arch`` and
builds its choices with :func:`nas.op_choice` / :func:`nas.input_choice`, so
either one loads the other's weights::

    def my_model(num_classes=10, arch=None):
        return nn.Sequential(nas.op_choice("conv", {"k3": conv3, "k5": conv5}, arch), ...)

    net = nas.Supernet.from_model(my_model())
    ...                                   # search
    arch = net.export()
    fixed = nas.fix(net, arch)            # the searched weights, no choices left
    fresh = my_model(arch=arch)           # the same network from scratch, to retrain
    fresh.load_state_dict(fixed.state_dict())
"""

from __future__ import annotations

import copy
from typing import Dict, List, Mapping, Union

from torch import nn

from .architecture import ChoiceArchitecture, Chosen
from .choice import ChosenInputs, OpChoice, _chosen_names, choice_labels, label_mismatch
from .supernet import Supernet


def fix(model: nn.Module, arch: Union[Mapping[str, Chosen], ChoiceArchitecture]) -> nn.Module:
    """A copy of ``model`` with each choice replaced by the candidate ``arch`` names for its label.

    Args:
        model: a model holding choices, or the supernet :meth:`nas.Supernet.from_model` made of one.
        arch: ``{label: candidate name}`` (as :meth:`export` returns it; a list of names for an
            ``InputChoice`` with ``n_chosen > 1``), covering every label of the model.

    Returns:
        A plain ``nn.Module`` (``model`` itself is left as it is), in the mode ``model`` was in.

    Example:
        >>> import torch, nas
        >>> from torch import nn
        >>> model = nn.Sequential(nas.OpChoice({"lin": nn.Linear(4, 4), "skip": nn.Identity()}, label="op"))
        >>> nas.fix(model, {"op": "skip"})
        Sequential(
          (0): Identity()
        )
    """
    if isinstance(arch, ChoiceArchitecture):
        arch = arch.choices
    if not isinstance(arch, Mapping):
        raise TypeError(f"an architecture is a dict label -> candidate name, got {type(arch).__name__}")
    if isinstance(model, Supernet):
        if not hasattr(model, "labels"):
            raise ValueError(
                "nas.fix takes a model with choices; a built-in space's network comes from nas.build_network"
            )
        model = model.model
    fixed = copy.deepcopy(model)  # the copy's choices carry the same labels and paths
    groups = choice_labels(fixed)
    if not groups:
        raise ValueError("the model holds no nas.OpChoice or nas.InputChoice; there is nothing to fix")
    mismatch = label_mismatch(groups, arch)
    if mismatch:
        raise ValueError(f"the architecture does not fit the model: {mismatch}")
    replacement: Dict[int, nn.Module] = {}  # id of each choice -> what takes its place
    for label, choices in groups.items():
        names = _chosen_names(arch[label], label, choices[0].names, choices[0].n_chosen)
        for c in choices:
            replacement[id(c)] = _replacement(c, names)
    if id(fixed) in replacement:  # the model is one choice
        return replacement[id(fixed)]
    for parent in list(fixed.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in replacement:
                parent._modules[name] = replacement[id(child)]
    return fixed


def _replacement(choice: nn.Module, names: List[str]) -> nn.Module:
    if isinstance(choice, OpChoice):
        return choice.candidates[names[0]]
    return ChosenInputs([choice.names.index(n) for n in names], choice.reduction)
