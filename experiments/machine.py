"""What a figure was measured on and with: the machine, the code, the command, the threads.

Every JSON record carries :func:`machine` (platform, ``lscpu`` model name,
``nproc``, python and torch versions, torch threads, load average; the device
when given), :func:`git_state` (HEAD, whether ``nas/`` or ``configs/`` differ
from it, and :func:`library_fingerprint`, a hash of the library's source) and
:func:`command_line`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

import nas
from experiments.settings import ROOT, rel
from experiments.tables import log
from nas.io import atomic_write_text
from nas.runtime import set_cpu_threads


def cpu_model() -> Optional[str]:
    """The CPU's model name (``lscpu``, else ``/proc/cpuinfo``), or None."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.strip().startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def nproc() -> Optional[int]:
    """The cores this process may use (``nproc``), else ``os.cpu_count()``."""
    try:
        return int(subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return os.cpu_count()


def machine(device: Optional[torch.device] = None) -> Dict[str, Any]:
    """The machine a figure was measured on (and the device, when given)."""
    info: Dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "nproc": nproc(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    try:
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(device)
            info["cuda_version"] = torch.version.cuda
        else:
            info["device_name"] = info["cpu_model"] or platform.processor() or "cpu"
    return info


def library_fingerprint() -> str:
    """A hash of the library's source (every ``.py`` file of the ``nas`` package, subpackages
    included): a cached run is reused only if it was made by the same code."""
    package = Path(nas.__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def git_state() -> Dict[str, Any]:
    """HEAD commit and whether nas/ or configs/ differ from it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "library_dirty": bool(git("status", "--porcelain", "--", "nas", "configs")),
        "library_fingerprint": library_fingerprint(),
    }


def command_line() -> str:
    """The command that ran this process: ``python -m experiments.NAME ...`` for a study run as a
    module, else the script's path relative to the repository root where possible."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return shlex.join(["python", "-m", spec.name, *sys.argv[1:]])
    argv = list(sys.argv)
    try:
        argv[0] = str(Path(argv[0]).resolve().relative_to(ROOT))
    except ValueError:
        pass
    return shlex.join(["python", *argv])


def set_threads(threads: Optional[int]) -> int:
    """``threads`` torch threads; by default 1 when the machine is already busy, else all cores.

    On a shared 2-core machine one thread is often faster than two under contention.
    """
    if threads is None:
        try:
            busy = os.getloadavg()[0] >= 1.0
        except OSError:
            busy = False
        threads = 1 if busy else max(1, os.cpu_count() or 1)
    set_cpu_threads(int(threads))
    return int(threads)


def write_record(
    out: Path, record: Dict[str, Any], here: Optional[Dict[str, Any]] = None, figures: Sequence[Optional[str]] = ()
) -> None:
    """Stamp ``record`` with the command, the machine (``here``, or this one now) and the code, write
    it to ``out`` as JSON (atomically), and log what was written (``figures`` too)."""
    record.update({"command": command_line(), "machine": here or machine(), **git_state()})
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=1) + "\n")
    log("wrote " + " and ".join([rel(out)] + [rel(f) for f in figures if f]))
