"""What the entry point decides for a run: the device, the CPU threads, where outputs go.

Library code never picks a device; the command line (or a user's script) calls
these and passes the results down.
"""

from __future__ import annotations

import difflib
import sys
import time
from importlib import resources
from pathlib import Path
from typing import List, Optional, Union

import torch

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    """``run.device`` as a device: ``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"run.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"run.device={name} but no CUDA GPU is visible; set run.device=cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"run.device={name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def check_device_options(device: torch.device, bf16: bool, sync_bn: bool = False) -> None:
    """Options that depend on the device the entry point chose."""
    if bf16 and device.type != "cuda":
        raise UserError("run.bf16 needs a CUDA device; set run.bf16=false or run.device=cuda")
    if sync_bn and device.type != "cuda":
        raise UserError("run.sync_bn needs CUDA devices (torch's SyncBatchNorm is GPU-only); set run.sync_bn=false")


def set_cpu_threads(threads: Optional[int]) -> None:
    """Apply ``run.threads`` (``None`` keeps torch's default). On cores shared with other
    jobs, fewer threads than cores can be much faster."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"run.threads must be >= 1 (or null for torch's default), got {threads}")
    torch.set_num_threads(threads)


def default_run_dir(kind: str, config_path: Optional[Union[str, Path]]) -> Path:
    """``runs/<kind>-<config stem>-<time>``."""
    stem = Path(config_path).stem if config_path else "default"
    return Path("runs") / f"{kind}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def packaged_config(name: str) -> Optional[Path]:
    """The shipped config called ``name`` (``default``, ``nb201_cifar10_cpu.yaml``, ``configs/x.yaml``),
    or ``None``. The top-level ``configs/`` folder is installed as the package data ``nas.configs``."""
    given = Path(name)
    if given.parent not in (Path("."), Path("configs")):
        return None
    stem = given.name
    if not stem.endswith((".yaml", ".yml")):
        stem += ".yaml"
    for folder in _config_folders():
        if (folder / stem).is_file():
            return folder / stem
    return None


def _config_folders():
    """Where the shipped configs are: ``nas/configs`` in an installed package, the top-level
    ``configs/`` next to the package in a source checkout (editable installs included)."""
    package = Path(str(resources.files("nas")))
    return [package / "configs", package.parent / "configs"]


def default_config() -> Path:
    """The config ``python search.py`` runs when none is given."""
    path = packaged_config("default.yaml")
    if path is None:
        raise UserError("the packaged configs are missing (nas.configs); reinstall with pip install .")
    return path


def shipped_configs() -> List[str]:
    """The names of the shipped configs (``--config NAME``), sorted."""
    return sorted({p.stem for folder in _config_folders() if folder.is_dir() for p in folder.glob("*.yaml")})


def find_config(name: Union[str, Path]) -> Path:
    """``name`` as given when that file exists; else the shipped config of that name, so
    ``--config configs/nb201_cifar10_cpu.yaml`` works from any directory after ``pip install``.
    Neither: :class:`UserError` listing the shipped names, with the nearest first."""
    path = Path(name)
    if path.is_file():  # a folder of that name (a run's --out, say) does not hide the shipped config
        return path
    found = packaged_config(str(name))
    if found is not None:
        return found
    if path.exists():
        raise UserError(f"config {path} is a folder, not a YAML file; give a config file or a shipped config's name")
    names = shipped_configs()
    stem = path.name[: -len(path.suffix)] if path.suffix in (".yaml", ".yml") else path.name
    near = difflib.get_close_matches(stem.lower(), names, n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise UserError(
        f"config file {path} does not exist and is not a shipped config{hint}; "
        f"give a YAML file or one of: {', '.join(names)}"
    )


def program() -> str:
    """How the user ran this program, for the commands hints print: ``gumbel-nas``, ``python -m nas``
    or ``python search.py``."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if script.name == "gumbel-nas":
        return script.name
    return "python -m nas" if (script.parent.name, script.name) == ("nas", "__main__.py") else "python search.py"


def torchrun_program(nproc: int, nproc_per_node: Optional[int] = None) -> str:
    """The torchrun launch of this program with ``nproc`` processes in all, ``nproc_per_node`` a
    machine (default: all on one), as the user started it. Several machines need the job's own
    rendezvous options, which a process cannot see: the command says so."""
    per_node = nproc if nproc_per_node is None else nproc_per_node
    if per_node >= nproc:
        launch = f"torchrun --standalone --nproc_per_node={nproc}"
    else:
        launch = f"torchrun --nnodes={nproc // per_node} --nproc_per_node={per_node} RENDEZVOUS_OPTIONS"
    name = program()
    if name == "gumbel-nas":  # an installed script: torchrun runs it directly, not through python
        return f"{launch} --no-python gumbel-nas"
    return f"{launch} -m nas" if name == "python -m nas" else f"{launch} search.py"
