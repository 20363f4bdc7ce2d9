"""Typed configuration: YAML files and ``--set key=value`` overrides.

A config is a tree of dataclasses. YAML is read with ``yaml.safe_load`` and
merged into the defaults; unknown keys and wrong types raise :class:`UserError`
listing what is valid. A ``null`` for an option that cannot be ``None`` is
dropped, so the option keeps its default.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from .errors import UserError
from .runtime import program
from .sampler import ESTIMATORS as SAMPLER_ESTIMATORS
from .sampler import tau_schedule

SCORE_ESTIMATOR = "rloo"  # the architecture step's score-function estimator (nas.searcher)
LOCAL_ESTIMATOR = "local"  # one edge's every op at the derived cell (nas.searcher)
ESTIMATORS = SAMPLER_ESTIMATORS + (SCORE_ESTIMATOR, LOCAL_ESTIMATOR)
RLOO_PATHS = 4  # rloo's default paths per architecture step


CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
DATASET_NAMES = ("cifar10", "cifar100", "synthetic")  # what data.name may be (nas.data loads them)


def dataset_key(name: str) -> str:
    """A data set's name with case, ``-`` and ``_`` ignored: what ``data.name`` is matched by."""
    return str(name).lower().replace("-", "").replace("_", "")


@dataclass
class DataConfig:
    name: str = "synthetic"  # synthetic | cifar10 | cifar100
    root: Optional[str] = None  # folder holding the CIFAR archive or its extracted folder
    download: bool = False  # fetch the official archive when missing
    verify_md5: bool = True  # check the official MD5s (false for modified copies)
    weight_fraction: float = 0.5  # share of the training set for the weights; the rest trains the architecture
    train_subset: Optional[int] = None  # use only this many training images (CPU budgets)
    augment: bool = True  # random crop (4 px padding) and horizontal flip
    num_train: int = 4000  # synthetic only: training images
    num_test: int = 1000  # synthetic only: test images
    image_size: int = 32  # synthetic only
    num_classes: int = 5  # synthetic only (2..10 glyph classes; the first five differ most)

    @property
    def key(self) -> str:
        """``name`` as the loader reads it (``CIFAR-10`` is ``cifar10``)."""
        return dataset_key(self.name)

    def shape(self) -> Tuple[Tuple[int, int, int], int]:
        """One image's shape and the class count, without loading the data."""
        if self.key == "synthetic":
            return (3, self.image_size, self.image_size), self.num_classes
        return (3, 32, 32), CIFAR_CLASSES.get(self.key, 10)


@dataclass
class SupernetConfig:
    space: str = "nb201"  # nb201 | darts
    mode: str = "gdas"  # gdas | snas | darts
    C: int = 16  # initial channels
    N: int = 5  # nb201: cells per stage; darts: total cells
    ops: Optional[List[str]] = None  # candidate ops; default: the space's standard list
    affine: bool = False  # learnable BN scale/shift inside cell ops
    derive_none: Optional[bool] = None  # may `none` win an edge when deriving? null: the space's rule
    # (nb201: yes, as GDAS; darts: no). nb201 + false: DARTS's rule
    model: Optional[str] = None  # "package.module:function" returning an nn.Module with nas.OpChoice /
    # nas.InputChoice (called with num_classes= when it takes it): searched instead of supernet.space,
    # whose C, N, ops, affine and derive_none it ignores; the run writes architecture.json


@dataclass
class WeightOptimConfig:
    lr: float = 0.025
    lr_min: float = 0.001  # cosine annealing floor
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    grad_clip: float = 5.0  # max global grad norm; 0 disables


@dataclass
class ArchOptimConfig:
    lr: float = 3e-4
    betas: List[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 1e-3
    beta_decay: float = 0.0  # beta-decay weight (beta-DARTS, Ye et al., CVPR 2022): adds
    # lambda * mean_edges logsumexp(alpha) to the arch loss, lambda
    # ramped linearly from 0 over the architecture epochs; 0 disables
    regularisers: Dict[str, float] = field(default_factory=dict)  # more terms of the logits in the arch
    # loss, name -> weight (nas.regularisers: beta_decay, logit_l2, or one registered from Python);
    # each weight follows its regulariser's schedule over the epochs. {beta_decay: w} = beta_decay: w
    paths: int = 1  # gdas: the arch step splits its batch into this many parts, each through its own
    # sampled path, so the logits' gradient averages over that many paths at one step's cost


@dataclass
class TauConfig:
    schedule: str = "linear"  # constant | linear | exponential | cosine
    max: float = 10.0  # tau at the start
    min: float = 0.1  # tau at the end (linear, cosine)
    decay: float = 0.956  # exponential: tau = max * decay**epoch


@dataclass
class CostConfig:
    """``search.cost``: hardware-aware search (nas.cost); weight 0 leaves the search as it is."""

    metric: str = "flops"  # flops (multiply-adds per image) | params | latency (ms per batch, from table)
    form: str = "mul_log"  # mul_log: CE * (log E / log ref)^weight (FBNet, ProxylessNAS) | add_linear:
    # CE + weight * (E - ref) / ref (ProxylessNAS) | budget: CE + weight * max(0, E - budget) / budget |
    # target: CE + weight * |E - budget| / budget (TuNAS: pulled to the budget from both sides)
    weight: float = 0.0  # 0: no cost term (and no cost logged)
    reference: Optional[float] = None  # ref, in the metric's unit; null: E when every candidate is equally
    # likely (none left out where it cannot be derived, as in E)
    budget: Optional[float] = None  # forms budget, target: the cost to stay under (and, target, to reach)
    tolerance: Optional[float] = None  # forms budget, target: derive (and keep through pruning) the most
    # probable cell costing within this share of the budget: below it (budget), on either side (target);
    # null: any cost up to the budget
    table: Optional[str] = None  # metric latency: the JSON written by `python search.py measure-latency`
    step: str = "adam"  # adam: the term joins the cross-entropy in the logits' Adam step | direct: after
    # that step, alpha -= search.arch.lr * d term / d alpha, each op in proportion to its cost (not mul_log)


@dataclass
class ScreenConfig:
    """``search.screen``: after the last epoch, train the search's first cells alone (nas.screen)."""

    cells: int = 0  # 0: off. >= 2: the derived cell and the derivation's runners-up (the budget's window
    # with a budget form), each trained from scratch at the supernet's size on the weights' split, then
    # measured on the architecture's split; the best is the search's cell. A resume may change this
    epochs: int = 6  # each cell's training (search.weights' optimiser and lr schedule, search.batch_size)
    distance: int = 1  # each cell differs from every earlier one in at least this many choices (edges):
    # above 1, the runners-up spread further from the derived cell than its nearest neighbours


@dataclass
class SearchConfig:
    epochs: int = 250
    batch_size: int = 64
    steps_per_epoch: Optional[int] = None  # cap on iterations per epoch (CPU budgets)
    warmup_epochs: int = 0  # first epochs train the weights only (no architecture steps)
    prune: str = "off"  # progressive pruning: after warm-up, at evenly spaced epochs, each
    # edge drops its weakest op until one is left (any mode). off | probability
    # (the least probable op) | loss (the op whose edge-restricted
    # supernet has the highest validation loss; nas.selection) | removal (the op
    # whose removal from the edge raises that loss least: DARTS-PT's measure,
    # with training between the decisions as DARTS-PT fine-tunes between them)
    prune_batches: int = 16  # prune=loss|removal, derive=removal|window: arch-split batches per measurement
    prune_start: Optional[int] = None  # the epoch after which the pruning events begin (spread evenly
    # from there to the end); null: the end of warm-up. Later starts decide on logits trained longer
    weight_paths: str = "gumbel"  # the paths the weight step trains after warm-up: gumbel (sampled from
    # the op probabilities, as GDAS) | uniform (every op still alive on an edge equally often, as
    # single-path one-shot NAS, Guo et al. 2020: no op is trained more because it is ahead) | window
    # (from the first epoch, a cell drawn uniformly from the budget's window, search.cost.tolerance,
    # among the ops still alive: the supernet trains the cells it will rank; budget/target forms)
    stop_when_decided: bool = True  # with pruning: end the search at its last event, when every edge
    # has one op left (the epochs after it would train the chosen network only; the genotype is the same)
    estimator: str = "st"  # gdas: the hard sample's gradient estimator: st (straight-through) |
    # gumbel_rao (straight-through averaged over noise given the sample; Paulus et al., ICLR 2021) |
    # reinmax (second order; Liu et al., NeurIPS 2023); nas.sampler documents the formulas | rloo (no
    # straight-through: several sampled paths each run the batch forward only, and each path's log
    # probability is weighted by its loss less the others' mean; Kool et al. 2019; nas.searcher) |
    # local (each step, one undecided edge runs every op still alive there, the other edges at the
    # cell the search derives now: the exact gradient of that edge's expected loss; nas.searcher)
    estimator_samples: Optional[int] = None  # gumbel_rao: Jacobians averaged (null: 10); rloo: paths per
    # architecture step, >= 2 (null: 4); st and reinmax take 1
    derive: str = "logits"  # how the final cell is derived: logits (each edge's most probable op) |
    # removal (the op whose removal from the edge raises the final supernet's validation loss most,
    # measured on fixed batches: DARTS-PT's selection, Wang et al., ICLR 2021; nas.selection) | window
    # (a budget form: of every cell whose cost lies in the budget's window, none excluded under DARTS's
    # rule, pruned ops included, the one with the final supernet's lowest validation loss on the same
    # fixed batches; at most 2000 cells)
    weights: WeightOptimConfig = field(default_factory=WeightOptimConfig)
    arch: ArchOptimConfig = field(default_factory=ArchOptimConfig)
    tau: TauConfig = field(default_factory=TauConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)

    def score_paths(self) -> int:
        """Paths per architecture step of the score-function estimator (0: the estimator is not rloo)."""
        if self.estimator != SCORE_ESTIMATOR:
            return 0
        return RLOO_PATHS if self.estimator_samples is None else self.estimator_samples


@dataclass
class RetrainSpaceConfig:
    """Training protocol of the discrete network of one space."""

    epochs: int = 200
    batch_size: int = 256
    C: int = 16
    N: int = 5  # nb201: cells per stage; darts: total cells
    lr: float = 0.1
    lr_min: float = 0.0  # cosine annealing floor
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    grad_clip: float = 5.0  # max global grad norm; 0 disables
    steps_per_epoch: Optional[int] = None  # cap on iterations per epoch (CPU budgets)
    auxiliary: bool = False  # darts: auxiliary head
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.0  # darts: ramped linearly from 0 to this value
    cutout: int = 0  # side of the cutout square in pixels; 0 disables


def _nb201_retrain() -> RetrainSpaceConfig:
    # NAS-Bench-201's protocol: 200 epochs, batch 256, SGD nesterov 0.1, cosine, wd 5e-4.
    return RetrainSpaceConfig()


def _darts_retrain() -> RetrainSpaceConfig:
    # DARTS's protocol: 600 epochs, 36 channels, 20 cells, cutout 16, auxiliary 0.4, drop-path 0.2.
    return RetrainSpaceConfig(
        epochs=600,
        batch_size=96,
        C=36,
        N=20,
        lr=0.025,
        lr_min=0.0,
        nesterov=False,
        weight_decay=3e-4,
        grad_clip=5.0,
        auxiliary=True,
        auxiliary_weight=0.4,
        drop_path_prob=0.2,
        cutout=16,
    )


def _model_retrain() -> RetrainSpaceConfig:
    # A custom model (supernet.model): NAS-Bench-201's protocol. The model function sets the network's
    # size, so C and N are ignored; it has no auxiliary head or drop-path (validate refuses them).
    return RetrainSpaceConfig()


@dataclass
class RetrainConfig:
    nb201: RetrainSpaceConfig = field(default_factory=_nb201_retrain)
    darts: RetrainSpaceConfig = field(default_factory=_darts_retrain)
    model: RetrainSpaceConfig = field(default_factory=_model_retrain)  # a custom model (supernet.model)


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None  # torch CPU threads; null: torch's default (one per core)
    bf16: bool = False  # bf16 autocast (CUDA only)
    channels_last: bool = False  # CUDA memory format
    log_every: int = 50  # steps between progress-bar postfix updates; 0: none
    sync_bn: bool = False  # torchrun on GPUs: batch-norm statistics over all ranks' batches
    # (SyncBatchNorm); false keeps each rank's own, as one GPU would
    dist_timeout: float = 600.0  # torchrun: seconds a collective may wait before the job fails
    plot: bool = False  # a search writes plot.png into its run directory at the end (the [plot] extra)
    tensorboard: bool = False  # TensorBoard events in RUN_DIR/tensorboard (the [tensorboard] extra)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ---------------------------------------------------------------------------
def valid_keys(cls: type = Config, prefix: str = "") -> List[str]:
    """Every dotted key of a config class."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            keys.extend(valid_keys(kind, f"{prefix}{f.name}."))
        else:
            keys.append(prefix + f.name)
    return keys


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``kind``; return it in that type."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key} must be a list of {_type_name(args[0])}, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise UserError(f"{key} must be a mapping of {_type_name(args[0])} to {_type_name(args[1])}, got {value!r}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 2e7 (no dot) as a string
    elif kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise UserError(f"{key} must be {_type_name(kind)}, got {value!r} ({type(value).__name__})")


def _merge(obj: Any, data: Dict[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise UserError(
                f"unknown config key {key!r}; valid keys under "
                f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}"
            )
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise UserError(f"{key} must be a mapping of {', '.join(f.name for f in dataclasses.fields(kind))}")
            _merge(getattr(obj, name), value, key + ".")
            continue
        if value is None and type(None) not in typing.get_args(kind):
            continue  # an unset option keeps its default
        setattr(obj, name, _coerce(value, kind, key))


def from_dict(data: Optional[Dict[str, Any]]) -> Config:
    """A Config from a (possibly partial) nested dict."""
    cfg = Config()
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise UserError(
            f"a config must be a mapping with sections {', '.join(f.name for f in dataclasses.fields(Config))}"
        )
    _merge(cfg, data, "")
    return cfg


def to_dict(cfg: Config) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(
            f"config file {path} does not exist; give an existing YAML file, e.g. configs/default.yaml"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; give a YAML file saved as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise UserError(f"config file {path} is not valid YAML{at}; fix its syntax") from None
    if data is not None and not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    return data or {}


def load_config(
    path: Optional[Union[str, Path]] = None,
    overrides: Optional[List[str]] = None,
    notes: Optional[List[str]] = None,
) -> Config:
    """Defaults, then the YAML file, then ``key=value`` overrides (YAML-typed values).

    An override of ``search.epochs`` scales the file's other epoch counts with it (see
    :func:`scale_epoch_counts`), unless they are overridden too; ``notes`` (if given) receives
    one line per value scaled, for the command line to print.
    """
    cfg = from_dict(load_yaml(path) if path is not None else None)
    base_epochs = cfg.search.epochs
    overridden = set()
    for item in overrides or []:
        apply_override(cfg, item)
        overridden.add(item.split("=", 1)[0].strip())
    scaled = scale_epoch_counts(cfg, base_epochs, keep=overridden)
    if notes is not None:
        notes.extend(scaled)
    return cfg


#: The search's epoch counts that are set relative to ``search.epochs``.
EPOCH_COUNTS = ("search.warmup_epochs", "search.prune_start")


def scale_epoch_counts(cfg: Config, base_epochs: int, keep: Sequence[str] = ()) -> List[str]:
    """Scale ``cfg``'s warm-up and pruning start from a run of ``base_epochs`` to ``search.epochs``.

    A config's warm-up and pruning start are chosen for its own length: a shortened (or
    lengthened) run keeps them at the same share of the run, rounded, with at least one epoch of
    architecture steps left. Keys in ``keep`` (set explicitly) are left alone. Returns one line per
    value changed, saying what was scaled.
    """
    s = cfg.search
    epochs = s.epochs
    if epochs == base_epochs or epochs < 1 or base_epochs < 1:
        return []
    notes = []

    def scaled(key: str, value: int, upper: int) -> int:
        new = max(0, min(upper, round(value * epochs / base_epochs)))
        if new != value:
            notes.append(f"{key}: {value} -> {new} (scaled with search.epochs {base_epochs} -> {epochs})")
        return new

    if "search.warmup_epochs" not in keep:
        s.warmup_epochs = scaled("search.warmup_epochs", s.warmup_epochs, epochs - 1)
    if s.prune_start is not None and "search.prune_start" not in keep:
        s.prune_start = max(s.warmup_epochs, scaled("search.prune_start", s.prune_start, epochs - 1))
    return notes


def apply_override(cfg: Config, item: str) -> None:
    """Apply one ``section.key=value`` override, type-checked."""
    if "=" not in item:
        raise UserError(f"override {item!r} must look like section.key=value, e.g. search.epochs=5")
    key, raw = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    obj: Any = cfg
    for depth, name in enumerate(parts):
        if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj)}:
            raise UserError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
        kind = typing.get_type_hints(type(obj))[name]
        if depth == len(parts) - 2 and typing.get_origin(kind) in (dict, Dict):
            # One entry of a mapping option (search.arch.regularisers.logit_l2=0.1); null removes it.
            entries = getattr(obj, name)
            value = _read_override(raw, typing.get_args(kind)[1], item)
            if value is None:
                entries.pop(parts[-1], None)
            else:
                entries[parts[-1]] = _coerce(value, typing.get_args(kind)[1], key)
            return
        if depth < len(parts) - 1:
            obj = getattr(obj, name)
    if dataclasses.is_dataclass(getattr(obj, parts[-1])):
        raise UserError(
            f"{key!r} is a section; set one of its keys, e.g. {key}.{dataclasses.fields(getattr(obj, parts[-1]))[0].name}=..."
        )
    kind = typing.get_type_hints(type(obj))[parts[-1]]
    value = _read_override(raw, kind, item)
    if value is None and type(None) not in typing.get_args(kind):
        name = _type_name(kind)
        raise UserError(f"{key} cannot be null; give {'an' if name[:1] in 'aeiou' else 'a'} {name}")
    setattr(obj, parts[-1], _coerce(value, kind, key))


def _read_override(raw: str, kind: Any, item: str) -> Any:
    """The value of an override: YAML-typed, except that a string option takes the text as written."""
    if kind is str or kind == Optional[str]:
        return None if raw.strip() in ("null", "~", "None") and kind is not str else raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise UserError(f"cannot read the value of override {item!r}") from None


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def diff(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> List[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(diff(va, vb, f"{prefix}{key}."))
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


# ---------------------------------------------------------------------------
def check_new_search(s: "SearchConfig") -> None:
    """What a search must satisfy to start, beyond :func:`validate` (which resumes and retrains run
    too): a run an earlier version started resumes as it started."""
    tau_at = make_tau_schedule(s.tau)
    arch_epochs = range(min(s.warmup_epochs, s.epochs), s.epochs)  # τ reaches the logits in these only
    low = min((tau_at(e, s.epochs) for e in arch_epochs), default=math.inf)
    if s.estimator == "reinmax" and low < 1:
        fix = _TAU_FLOOR.get(s.tau.schedule, "search.tau.min=1 or higher")
        raise UserError(
            f"search.estimator=reinmax is derived for τ >= 1 (below it its gradient turns away from the true one, "
            f"and its authors' code refuses it), but search.tau falls to {low:.3g}: set {fix}"
        )


def make_tau_schedule(tau_cfg: TauConfig) -> Callable[[int, int], float]:
    """``search.tau`` as a pure function ``(epoch, epochs) -> tau`` (ValueError on bad settings)."""
    t = tau_cfg
    if t.schedule == "constant":
        return tau_schedule("constant", tau=t.max)
    if t.schedule == "exponential":
        return tau_schedule("exponential", tau0=t.max, decay=t.decay)
    return tau_schedule(t.schedule, tau_max=t.max, tau_min=t.min)


# How to keep each τ schedule at or above 1 (ReinMax's range); the others end at search.tau.min.
_TAU_FLOOR = {
    "constant": "search.tau.max=1 or higher",
    "exponential": "search.tau.max and search.tau.decay so that τ stays >= 1 to the last epoch",
}

PRUNE_RULES = ("off", "probability", "loss", "removal")
WEIGHT_PATHS = ("gumbel", "uniform", "window")
DERIVE_RULES = ("logits", "removal", "window")


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _check_nonnegative(key: str, value: Any, note: str = "") -> None:
    """``value`` is a finite number >= 0; ``note`` (e.g. what 0 means) goes into the message."""
    if not (value >= 0 and _finite(value)):
        raise UserError(f"{key} must be a finite number >= 0{f' ({note})' if note else ''}, got {value}")


def _check_positive(**values: Any) -> None:
    for key, value in values.items():
        if value is not None and not (value > 0 and _finite(value)):
            raise UserError(f"{key} must be > 0 and finite, got {value}")


def _check_sgd(section: str, p: Any) -> None:
    """The SGD settings of ``search.weights`` or a ``retrain.*`` section (torch refuses some with a
    traceback; a negative floor would turn the cosine schedule into gradient ascent)."""
    _check_positive(**{f"{section}.lr": p.lr})
    _check_nonnegative(f"{section}.lr_min", p.lr_min, "the cosine schedule's floor")
    if not 0 <= p.momentum < 1:
        raise UserError(f"{section}.momentum must be in [0, 1), got {p.momentum}")
    if p.nesterov and p.momentum == 0:
        raise UserError(f"{section}.nesterov needs momentum > 0; for plain SGD set {section}.nesterov=false")
    _check_nonnegative(f"{section}.weight_decay", p.weight_decay)
    _check_nonnegative(f"{section}.grad_clip", p.grad_clip, "0 turns clipping off")


def _check_custom_model(cfg: Config) -> None:
    """``supernet.model``: importable (an InputChoice with ``n_chosen > 1`` is checked once the
    model is built: the search refuses the options that measure one candidate at a time)."""
    from .model_supernet import load_model_factory

    load_model_factory(cfg.supernet.model)  # UserError naming the problem


def _check_regularisers(a: ArchOptimConfig) -> None:
    """``search.arch.regularisers``: registered names, finite weights >= 0, beta-decay set once."""
    from .regularisers import regulariser_names

    for name, weight in a.regularisers.items():
        if name not in regulariser_names():
            raise UserError(
                f"unknown regulariser {name!r} in search.arch.regularisers; known: {', '.join(regulariser_names())} "
                "(register one with nas.regularisers.register_regulariser in the module supernet.model names)"
            )
        _check_nonnegative(f"search.arch.regularisers.{name}", weight, "0 disables")
    if a.beta_decay and a.regularisers.get("beta_decay"):
        raise UserError(
            "search.arch.beta_decay and search.arch.regularisers.beta_decay set the same weight; set one of them"
        )


def _check_cost(c: CostConfig) -> None:
    """``search.cost``: known metric and form, and the numbers each form divides by."""
    from .cost import BUDGET_FORMS, FORMS, METRICS, STEPS

    if c.metric not in METRICS:
        raise UserError(f"unknown search.cost.metric {c.metric!r}; choose one of: {', '.join(METRICS)}")
    if c.form not in FORMS:
        raise UserError(f"unknown search.cost.form {c.form!r}; choose one of: {', '.join(FORMS)}")
    if c.step not in STEPS:
        raise UserError(f"unknown search.cost.step {c.step!r}; choose one of: {', '.join(STEPS)}")
    if c.step == "direct" and c.form == "mul_log":
        raise UserError(
            "search.cost.step=direct steps an additive term, and mul_log multiplies the cross-entropy; "
            "use search.cost.form=add_linear, budget or target, or search.cost.step=adam"
        )
    _check_nonnegative("search.cost.weight", c.weight, "0 turns the cost term off")
    for key, value in (("reference", c.reference), ("budget", c.budget)):
        if value is not None and not (value > 0 and _finite(value)):
            raise UserError(f"search.cost.{key} must be a finite number > 0 in the metric's unit, got {value}")
    if c.tolerance is not None and not 0 < c.tolerance < 1:
        raise UserError(
            f"search.cost.tolerance must be in (0, 1), the share of the budget a derived cell may leave unspent, "
            f"got {c.tolerance}"
        )
    if c.weight == 0:
        return
    if c.budget is not None and c.form not in BUDGET_FORMS:
        raise UserError(
            f"search.cost.budget is read by the budget and target forms, not {c.form} (which weighs the cost "
            "against search.cost.reference); set search.cost.form=budget (or target), or drop the budget"
        )
    if c.tolerance is not None and c.form not in BUDGET_FORMS:
        raise UserError(
            f"search.cost.tolerance applies to the budget and target forms, not {c.form}; "
            "set search.cost.form=target (or budget), or drop the tolerance"
        )
    if c.form == "mul_log" and c.reference is not None and not c.reference > 1:
        raise UserError(
            f"search.cost.form=mul_log divides by log(search.cost.reference), so it needs reference > 1, got "
            f"{c.reference}; give it in a smaller unit's terms (flops are counted, latency is in ms) or use add_linear"
        )
    if c.form in BUDGET_FORMS and c.budget is None:
        goal = "the cost to stay under" if c.form == "budget" else "the cost to reach and stay under"
        raise UserError(
            f"search.cost.form={c.form} needs search.cost.budget, {goal}, e.g. --set search.cost.budget=2e7"
        )
    if c.metric == "latency" and c.table is None:
        raise UserError(
            "search.cost.metric=latency needs search.cost.table, a table measured with "
            f"{program()} measure-latency --config CONFIG --device DEVICE --out lut.json"
        )
    if c.metric != "latency" and c.table is not None:
        raise UserError(f"search.cost.table is read for metric latency only; set search.cost.table=null for {c.metric}")


def validate(cfg: Config) -> None:
    """Every semantic check that types alone cannot catch, once, at the boundary; each names the key to fix.

    A config is checked as a whole (a retrain refuses a config whose search section is broken,
    as a search does). ``run_search`` and ``run_retrain`` call it first, so the library below
    them can assume a sound config (its constructors raise ``ValueError`` for bad arguments).
    """
    from .ops import check_ops
    from .spaces import get_space
    from .supernet import MODES

    s, sn, d, r = cfg.search, cfg.supernet, cfg.data, cfg.run
    if sn.model is not None:
        _check_custom_model(cfg)
    try:
        space = get_space(sn.space)
    except ValueError as exc:
        raise UserError(f"{exc} (supernet.space)") from None
    if sn.mode not in MODES:
        raise UserError(f"unknown mode {sn.mode!r} (supernet.mode); choose one of: {', '.join(MODES)}")
    ops = sn.ops if sn.ops is not None else space.default_ops
    try:
        check_ops(ops)
        space.check_derive_none(sn.derive_none)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if len(ops) < 2:
        raise UserError(f"supernet.ops {list(ops)} leaves nothing to choose between; give at least 2 ops")
    _check_positive(
        **{
            "search.epochs": s.epochs,
            "search.batch_size": s.batch_size,
            "supernet.C": sn.C,
            "supernet.N": sn.N,
            "search.steps_per_epoch": s.steps_per_epoch,
            "search.arch.lr": s.arch.lr,
            "search.prune_batches": s.prune_batches,
        }
    )
    _check_sgd("search.weights", s.weights)
    if sn.N < space.min_cells:
        raise UserError(
            f"the {space.name} space needs supernet.N >= {space.min_cells} cells, got {sn.N}. "
            f"Fix: --set supernet.N={space.min_cells}"
        )
    if not 0 <= s.warmup_epochs < s.epochs:
        raise UserError(
            f"search.warmup_epochs must be in [0, search.epochs), got {s.warmup_epochs} with "
            f"search.epochs={s.epochs}. Fix: lower it, e.g. --set search.warmup_epochs=0"
        )
    if r.log_every < 0:
        raise UserError(f"run.log_every must be >= 0 (0 turns the progress-bar postfix off), got {r.log_every}")
    if not r.dist_timeout > 0:
        raise UserError(f"run.dist_timeout must be > 0 seconds, got {r.dist_timeout}")
    if r.threads is not None and r.threads < 1:
        raise UserError(f"run.threads must be >= 1 (or null for torch's default), got {r.threads}")
    if not 0 < d.weight_fraction < 1:
        raise UserError(f"data.weight_fraction must be in (0, 1), got {d.weight_fraction}")
    if d.key not in DATASET_NAMES:
        raise UserError(
            f"unknown data set {d.name!r}: valid names are {', '.join(DATASET_NAMES)} (set data.name to one of them)"
        )
    if d.key == "synthetic" and d.image_size % 4:
        # Both spaces halve the resolution twice; an odd size after a halving misaligns a
        # reduction's shortcut with its convolution.
        raise UserError(
            f"data.image_size must be a multiple of 4 (the network halves it twice), got {d.image_size}. "
            "Fix: use 16 or 32"
        )
    if d.train_subset is not None and d.train_subset < 1:
        raise UserError(f"data.train_subset must be >= 1 (or null for the whole training set), got {d.train_subset}")
    _check_nonnegative("search.arch.beta_decay", s.arch.beta_decay, "0 disables")
    _check_regularisers(s.arch)
    if len(s.arch.betas) != 2 or not all(0 <= b < 1 for b in s.arch.betas):
        raise UserError(f"search.arch.betas must be two numbers in [0, 1), got {s.arch.betas}")
    if s.weight_paths not in WEIGHT_PATHS:
        raise UserError(f"unknown search.weight_paths {s.weight_paths!r}; choose one of: {', '.join(WEIGHT_PATHS)}")
    if s.weight_paths != "gumbel" and sn.mode != "gdas":
        raise UserError(
            f"search.weight_paths={s.weight_paths} needs supernet.mode=gdas (the soft modes train every op at "
            f"every step), got {sn.mode}; set search.weight_paths=gumbel"
        )
    if s.weight_paths == "window" and not (s.cost.weight > 0 and s.cost.form in ("budget", "target")):
        raise UserError(
            "search.weight_paths=window trains the cells of the budget's window: it needs search.cost.form=budget "
            "or target with search.cost.weight > 0 (and search.cost.tolerance for a window below the budget), "
            "or search.weight_paths=uniform"
        )
    if s.estimator not in ESTIMATORS:
        raise UserError(f"unknown search.estimator {s.estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
    if s.estimator == LOCAL_ESTIMATOR:
        if sn.mode != "gdas" or s.estimator_samples is not None or s.arch.paths != 1:
            raise UserError(
                "search.estimator=local runs one op per edge and forward: it needs supernet.mode=gdas, "
                f"search.estimator_samples=null and search.arch.paths=1 (got {sn.mode}, {s.estimator_samples}, "
                f"{s.arch.paths})"
            )
    elif s.estimator == SCORE_ESTIMATOR:
        if sn.mode != "gdas":
            raise UserError(
                f"search.estimator=rloo scores sampled paths and needs supernet.mode=gdas, got {sn.mode}; "
                "set search.estimator=st"
            )
        if s.estimator_samples is not None and s.estimator_samples < 2:
            raise UserError(
                f"search.estimator_samples={s.estimator_samples}: rloo compares each path with the others and "
                "needs >= 2 paths per step (null: 4)"
            )
        if s.arch.paths != 1:
            raise UserError(
                f"search.arch.paths={s.arch.paths} splits the batch for the straight-through step; with "
                "search.estimator=rloo set search.estimator_samples (paths per step) and leave search.arch.paths=1"
            )
    elif s.estimator_samples is not None and (s.estimator_samples < 1 or s.estimator != "gumbel_rao"):
        raise UserError(
            f"search.estimator_samples={s.estimator_samples} needs search.estimator=gumbel_rao (or rloo) and a "
            "value >= 1; set it to null for the other estimators"
        )
    if s.arch.paths < 1:
        raise UserError(
            f"search.arch.paths must be >= 1 (1: one sampled path per architecture step), got {s.arch.paths}"
        )
    # The soft modes run every op with soft weights: no hard sample, so nothing for these to change.
    if sn.mode != "gdas" and s.estimator != "st":
        raise UserError(
            f"search.estimator={s.estimator} is a backward for gdas's hard sample; supernet.mode={sn.mode} draws "
            "none: set search.estimator=st"
        )
    if sn.mode != "gdas" and s.arch.paths != 1:
        raise UserError(
            f"search.arch.paths={s.arch.paths} splits the batch over sampled paths in gdas; supernet.mode="
            f"{sn.mode} runs every op already: set search.arch.paths=1"
        )
    if s.derive not in DERIVE_RULES:
        raise UserError(f"unknown search.derive {s.derive!r}; choose one of: {', '.join(DERIVE_RULES)}")
    if s.derive == "removal" and s.prune != "off":
        raise UserError(
            "search.derive=removal measures the final supernet's ops, but a pruned search ends with one op "
            "per edge: set search.prune=off, or search.derive=logits"
        )
    if s.derive == "window" and not (s.cost.weight > 0 and s.cost.form in ("budget", "target")):
        raise UserError(
            "search.derive=window ranks the cells of the budget's window: it needs search.cost.form=budget or "
            "target with search.cost.weight > 0 (and search.cost.tolerance for a window below the budget), "
            "or search.derive=logits"
        )
    if s.screen.cells < 0 or s.screen.cells == 1:
        raise UserError(
            f"search.screen.cells must be 0 (off) or at least 2 (the derived cell and a runner-up), got {s.screen.cells}"
        )
    if s.screen.distance < 1:
        raise UserError(
            f"search.screen.distance must be >= 1 (choices in which two screened cells differ), got {s.screen.distance}"
        )
    if s.screen.cells and s.screen.epochs < 1:
        raise UserError(f"search.screen.epochs must be >= 1 (each screened cell's training), got {s.screen.epochs}")
    if s.prune not in PRUNE_RULES:
        raise UserError(f"unknown search.prune {s.prune!r}; choose one of: {', '.join(PRUNE_RULES)}")
    # A run shorter than one epoch per op prunes several ops at some epoch boundaries (nas.search.prune_events).
    if s.prune != "off" and s.prune_start is not None and not s.warmup_epochs <= s.prune_start < s.epochs:
        raise UserError(
            f"search.prune_start must be in [search.warmup_epochs, search.epochs - 1] = "
            f"[{s.warmup_epochs}, {s.epochs - 1}], got {s.prune_start}; or null to start at the end of warm-up"
        )
    try:
        make_tau_schedule(s.tau)
    except ValueError as exc:
        raise UserError(f"search.tau: {exc}") from None
    _check_cost(s.cost)
    for f in dataclasses.fields(cfg.retrain):
        p, section = getattr(cfg.retrain, f.name), f"retrain.{f.name}"
        _check_positive(
            **{
                f"{section}.epochs": p.epochs,
                f"{section}.batch_size": p.batch_size,
                f"{section}.C": p.C,
                f"{section}.N": p.N,
                f"{section}.steps_per_epoch": p.steps_per_epoch,
            }
        )
        _check_sgd(section, p)
        _check_nonnegative(f"{section}.auxiliary_weight", p.auxiliary_weight)
        if not 0 <= p.drop_path_prob < 1:
            raise UserError(f"{section}.drop_path_prob must be in [0, 1), got {p.drop_path_prob}")
        if p.cutout < 0:
            raise UserError(f"{section}.cutout must be >= 0 pixels (0 turns it off), got {p.cutout}")
    darts_cells = get_space("darts").min_cells
    if cfg.retrain.darts.N < darts_cells:
        raise UserError(
            f"retrain.darts.N must be >= {darts_cells} (the darts network's cells), got {cfg.retrain.darts.N}"
        )
    n = cfg.retrain.nb201  # NB201's network has neither: the settings would be ignored
    if n.auxiliary or n.drop_path_prob:
        raise UserError(
            "retrain.nb201.auxiliary and retrain.nb201.drop_path_prob are the DARTS network's auxiliary head and "
            "drop-path, which NAS-Bench-201's network has not: set retrain.nb201.auxiliary=false and "
            "retrain.nb201.drop_path_prob=0"
        )
    m = cfg.retrain.model  # a custom model's network is the model function's own: no DARTS extras
    if m.auxiliary or m.drop_path_prob:
        raise UserError(
            "retrain.model.auxiliary and retrain.model.drop_path_prob are the DARTS network's auxiliary head "
            "and drop-path, which a custom model (supernet.model) has not: set retrain.model.auxiliary=false "
            "and retrain.model.drop_path_prob=0 (retrain.model.C and .N are ignored too: the model function "
            "sets the network's size)"
        )
