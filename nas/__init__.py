"""Differentiable neural-architecture search with Gumbel-softmax sampling.

    import nas
    net = nas.build_supernet("nb201", mode="gdas", C=16, N=5, num_classes=10)
    geno = net.genotype()
    model = nas.build_network(geno, C=16, N=5, num_classes=10)
"""
from .benchmarks import NB201Benchmark, load_benchmark
from .errors import UserError
from .genotype import Genotype
from .ops import DARTS_OPS, NB201_OPS, OPS, build_op, register_op
from .spaces import SPACES, build_network, build_supernet
from .supernet import MODES, Supernet

__all__ = ["UserError", "Genotype", "OPS", "NB201_OPS", "DARTS_OPS", "register_op", "build_op",
           "SPACES", "build_supernet", "build_network", "MODES", "Supernet",
           "load_benchmark", "NB201Benchmark"]
