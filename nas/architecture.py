"""The architecture a search of a custom model derives: ``{label: candidate name}``, as a value and as JSON.

A model built from :class:`nas.OpChoice` / :class:`nas.InputChoice` has no cells
and no registered space, so its searched architecture is a plain mapping from
each choice's label to the chosen candidate's name (a list of names for an
``InputChoice`` with ``n_chosen > 1``). :class:`ChoiceArchitecture` carries it
with the probabilities it was derived from; it is what a search of
``supernet.model`` logs and writes to ``architecture.json``.

    arch = net.export()                       # {"block0.kernel": "k5", ...}
    nas.save_architecture(arch, "arch.json")  # atomic
    model = my_model(arch=nas.load_architecture("arch.json"))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

from .errors import UserError
from .io import atomic_write_text, read_json

Chosen = Union[str, List[str]]


@dataclass
class ChoiceArchitecture:
    """A derived architecture of a custom model.

    Attributes:
        choices: label -> the chosen candidate's name (a list for ``n_chosen > 1``).
        probs: label -> candidate name -> probability, when known.

    Example:
        >>> arch = ChoiceArchitecture({"op": "k3"}, {"op": {"k3": 0.75, "skip": 0.25}})
        >>> str(arch)
        '{"op": "k3"}'
    """

    choices: Dict[str, Chosen]
    probs: Optional[Dict[str, Dict[str, float]]] = None

    def __str__(self) -> str:
        return json.dumps(self.choices)

    def same_architecture(self, other: "ChoiceArchitecture") -> bool:
        return self.choices == other.choices

    def log_text(self) -> str:
        """One line: ``label=name`` per choice, with its probability when known."""
        parts = []
        for label, chosen in self.choices.items():
            p = (self.probs or {}).get(label, {})
            names = chosen if isinstance(chosen, list) else [chosen]
            prob = "+".join(f"{p[n]:.2f}" for n in names if n in p)
            parts.append(f"{label}={','.join(names)}" + (f" ({prob})" if prob else ""))
        return "  ".join(parts)

    def to_dict(self) -> dict:
        return {"kind": "choices", "choices": self.choices, "probs": self.probs}

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ChoiceArchitecture":
        """From :meth:`to_dict`'s form, or from a plain ``{label: name}`` mapping."""
        if d.get("kind") == "choices" and isinstance(d.get("choices"), dict):
            return cls(dict(d["choices"]), d.get("probs"))
        return cls(dict(d))


def save_architecture(arch: Union[Mapping[str, Chosen], ChoiceArchitecture], path: Union[str, Path]) -> None:
    """Write ``arch`` as JSON, atomically (readers never see a partial file).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "arch.json")
        >>> save_architecture({"op": "k3"}, path)
        >>> load_architecture(path)
        {'op': 'k3'}
    """
    text = arch.to_json() if isinstance(arch, ChoiceArchitecture) else json.dumps(dict(arch), indent=2)
    atomic_write_text(path, text + "\n")


def load_architecture(path: Union[str, Path]) -> Dict[str, Chosen]:
    """``{label: name}`` from a file :func:`save_architecture` (or a search's ``architecture.json``) wrote."""
    path = Path(path)
    data = read_json(path, "architecture file", "give the JSON file export() or a search wrote")
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object label -> candidate name")
    if "space" in data and "normal" in data:
        raise UserError(
            f"{path} holds a cell of a built-in space (a genotype.json), not a custom model's choices; "
            "read it with nas.Genotype.from_json(text)"
        )
    return ChoiceArchitecture.from_dict(data).choices
