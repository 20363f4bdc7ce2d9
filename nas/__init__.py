"""Differentiable neural-architecture search with Gumbel-softmax sampling.

    import nas
    net = nas.build_supernet("nb201", mode="gdas", C=16, N=5, num_classes=10)
    geno = net.genotype()
    model = nas.build_network(geno, C=16, N=5, num_classes=10)

Search spaces are registered objects (:class:`SearchSpace`): ``nas.get_space("nb201")``
carries everything specific to a space, and :func:`register_space` adds one.

Any model becomes a supernet: put :class:`OpChoice` / :class:`InputChoice` in it,
``net = nas.Supernet.from_model(model)``, search, then ``nas.fix(model, net.export())``.
"""

from .architecture import ChoiceArchitecture, load_architecture, save_architecture
from .benchmarks import NB201Benchmark, load_benchmark
from .choice import InputChoice, OpChoice, input_choice, op_choice
from .errors import UserError
from .fix import fix
from .genotype import Genotype
from .ops import DARTS_OPS, NB201_OPS, OPS, build_op, register_op
from .regularisers import REGULARISERS, register_regulariser, unregister_regulariser
from .spaces import (
    SPACES,
    SearchSpace,
    build_network,
    build_supernet,
    get_space,
    register_space,
    space_names,
    unregister_space,
)
from .supernet import MODES, Supernet

# The built-in spaces register themselves on import; nb201 first, the order names are listed in.
# model_supernet makes Supernet.from_model work (it registers itself as the wrapper of any model).
from . import nb201, darts, model_supernet  # noqa: E402,F401  # isort: skip

__all__ = [
    "UserError",
    "Genotype",
    "OPS",
    "NB201_OPS",
    "DARTS_OPS",
    "register_op",
    "build_op",
    "REGULARISERS",
    "register_regulariser",
    "unregister_regulariser",
    "SPACES",
    "SearchSpace",
    "register_space",
    "unregister_space",
    "get_space",
    "space_names",
    "build_supernet",
    "build_network",
    "MODES",
    "Supernet",
    "load_benchmark",
    "NB201Benchmark",
    "OpChoice",
    "InputChoice",
    "op_choice",
    "input_choice",
    "fix",
    "ChoiceArchitecture",
    "save_architecture",
    "load_architecture",
]
