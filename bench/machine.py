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


def run_benchmark(*, title: str, args, prefix: str, body, argv: list[str] | None = None) -> dict:
    """What every benchmark's entry point does around its own work: the job kinds installed, torch
    threads (`args.threads`), a header (title and date, the command, the machine and its load),
    the default model prepared, a work directory (`args.workdir` or a new temp one), then
    `body(workdir)`, the total wall time, and everything as JSON in `args.json_out` if given."""
    import json
    import sys
    import tempfile
    import time
    from datetime import UTC, datetime
    from pathlib import Path

    import torch

    from cli import job_kinds
    from feedback.model_cache import prepare_default_model

    job_kinds.install()  # as every entry point does: the table of job kinds lives in cli/
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    command = sys.argv if argv is None else [sys.argv[0], *argv]
    print(f"# {title}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", flush=True)
    print(f"command: {' '.join([Path(sys.executable).name, *command])}", flush=True)
    print(f"machine: {machine_line()}; {load_line()}", flush=True)
    prepare_default_model()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"workdir: {workdir}", flush=True)
    result = body(workdir)
    print(f"\nTotal wall time: {(time.perf_counter() - t0) / 60:.1f} min ({load_line()})", flush=True)
    out = {"argv": command, "machine": machine_line(), "result": result}
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1, default=str))
    return out
