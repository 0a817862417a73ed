"""The machine line every benchmark prints next to its figures."""
from __future__ import annotations

import os
import platform


def machine_line() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"nproc={nproc}, torch threads={torch.get_num_threads()}, CPU: {cpu}, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def load_line() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average unavailable"
