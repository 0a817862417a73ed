"""vLLM on a GPU host (issue 14, part 4): our OpenAI-compatible client against a `vllm serve` this
script starts, compared with vLLM's own offline `LLM.generate`, plus hot-loading a LoRA adapter.

1. `vllm serve <model dir> --enable-lora` (with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), waited for
   on /health. Our client (feedback/policy/openai_compat.py, the app's concurrency) samples the 16
   prompts of bench/sampling.py, n=4, 256 new tokens, temperature 0.8, top_p 0.95: one warm-up,
   then --repeats timed calls.
2. Hot-loading an adapter the way the app deploys one (feedback.deploy: POST /v1/load_lora_adapter),
   timed, then the time of the first sampling call on the loaded adapter. The adapter is --adapter
   (a trained one, e.g. a policy version's adapter directory) or, by default, a fresh LoRA adapter
   with the training stages' LoRA settings (the same size and layers as a trained one).
3. The server stopped, vLLM's offline engine on the same GPU with the same engine settings
   (LoRA enabled, same max model length and memory share), `LLM.generate` on the same prompts
   (rendered with the model's chat template, as the server renders a chat request) and settings.

Tokens/s counts the completion text of every sample re-tokenized with the model's tokenizer, the
same way on both sides. The ratio ours / offline is what the HTTP server, the OpenAI protocol and
our client cost against vLLM in-process (goal: >= 0.9). On one GPU the whole run takes about
2-3 minutes for the 135M model (most of it the two engine start-ups), well under 5.

    .venv/bin/python bench/vllm_sampling.py [--model-dir DIR] [--adapter DIR] [--repeats 3]

Exit codes: 0 when it ran; 77 "no GPU here" (no CUDA device: nothing was run; 77 is the
conventional "skipped" code of test harnesses); 78 when a GPU is there but vLLM is not installed
(`pip install -r requirements-gpu.txt`); 1 when the server did not start or a step failed.
"""
from __future__ import annotations

import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
# A script's own directory comes first on the path, where a module in bench/ could shadow the
# standard library: take bench/ off it, put the repo root on.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

EXIT_NO_GPU = 77
EXIT_NO_VLLM = 78
GOAL_RATIO = 0.9
TIME_LIMIT_S = 300
ADAPTER_NAME = "bench-adapter"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-dir", default=None,
                   help="a prepared model directory (default: the default model, prepared as `make run` does)")
    p.add_argument("--served-model-name", default=None, help="default: the model directory's name")
    p.add_argument("--adapter", default=None,
                   help="a LoRA adapter directory to hot-load (default: a fresh one with the training LoRA settings)")
    p.add_argument("--prompts", type=int, default=16, help="prompts of bench/sampling.py")
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each variant (after one warm-up)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="requests our client keeps in flight (default: the app's, OpenAIPolicyClient's default)")
    p.add_argument("--max-lora-rank", type=int, default=16, help="vllm serve --max-lora-rank (the app's default)")
    p.add_argument("--max-model-len", type=int, default=2048, help="context length both engines are started with")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85,
                   help="share of the GPU's memory each engine takes (they run one after the other)")
    p.add_argument("--startup-timeout", type=float, default=240, help="seconds to wait for vllm serve's /health")
    p.add_argument("--port", type=int, default=0, help="vllm serve's port (0: a free one)")
    return p


# --- can it run here ----------------------------------------------------------------------------


def no_gpu_reason() -> str | None:
    """Why there is no usable CUDA GPU here, or None. Checks the device files first, so a machine
    without a GPU answers at once, without importing torch."""
    devices = sorted(Path("/dev").glob("nvidia[0-9]*"))
    if not devices and shutil.which("nvidia-smi") is None:
        return "no NVIDIA device (/dev/nvidia*) and no nvidia-smi"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (a CPU-only build, or no driver)"
    return None


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


# --- inputs -------------------------------------------------------------------------------------


def load_conversations(count: int):
    """The prompts bench/sampling.py samples, as chat conversations."""
    from bench.sampling import conversations_for

    return conversations_for(count)


def make_adapter(model_dir: Path, target: Path) -> Path:
    """A fresh LoRA adapter on `model_dir` with the training stages' LoRA settings (rank, alpha,
    target layers): what a trained round's adapter is, before training moves its weights."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from training.stages.base import CommonConfig, lora_config

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    get_peft_model(model, lora_config(CommonConfig())).save_pretrained(target)
    return target


# --- measurements -------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    finish: Counter = field(default_factory=Counter)

    def tokens_per_s(self) -> float:
        return statistics.median(t / s for t, s in zip(self.tokens, self.seconds, strict=True))


def timed(variant: Variant, repeats: int, call: Callable[[], list[tuple[str, str | None]]],
          count_tokens: Callable[[str], int]) -> None:
    """One warm-up call, then `repeats` timed ones; `call` returns (text, finish reason) per sample."""
    call()
    for _ in range(repeats):
        began = time.perf_counter()
        samples = call()
        variant.seconds.append(time.perf_counter() - began)
        variant.tokens.append(sum(count_tokens(text) for text, _ in samples))
        variant.finish.update(reason or "?" for _, reason in samples)


@contextlib.contextmanager
def vllm_server(args: argparse.Namespace, model_dir: Path, served_name: str, log: Path) -> Iterator[str]:
    """`vllm serve` with LoRA and runtime adapter loading on; its base URL once /health answers."""
    from testkit.local_servers import free_port

    port = args.port or free_port()
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    command = [shutil.which("vllm") or "vllm", "serve", str(model_dir), "--served-model-name", served_name,
               "--host", "127.0.0.1", "--port", str(port), "--enable-lora", "--max-lora-rank",
               str(args.max_lora_rank), "--max-model-len", str(args.max_model_len),
               "--gpu-memory-utilization", str(args.gpu_memory_utilization), "--seed", str(args.seed)]
    print(f"# {' '.join(command)}", flush=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + args.startup_timeout
        while not _healthy(base):
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve did not answer /health in {args.startup_timeout:g} s:\n"
                                   f"{log.read_text()[-3000:]}")
            time.sleep(1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def serve_phase(args, model_dir: Path, served_name: str, adapter: Path, conversations, params, count_tokens,
                workdir: Path) -> tuple[Variant, dict[str, float]]:
    from db.models import PolicyVersion
    from feedback.deploy import deploy
    from feedback.policy.openai_compat import OpenAIPolicyClient
    from feedback.settings import Settings

    ours = Variant("ours: OpenAIPolicyClient -> vllm serve")
    began = time.perf_counter()
    with vllm_server(args, model_dir, served_name, workdir / "vllm-serve.log") as base:
        times = {"server start (s)": time.perf_counter() - began}
        extra = {} if args.concurrency is None else {"max_concurrency": args.concurrency}
        client = OpenAIPolicyClient(base_url=f"{base}/v1", model=served_name, **extra)

        def sample(c=client):
            return [(s.text, s.finish_reason) for per_prompt in c.generate(conversations, params) for s in per_prompt]

        timed(ours, args.repeats, sample, count_tokens)

        # The adapter the way the app deploys a policy version to a vLLM server.
        settings = Settings(policy_backend="openai", policy_base_url=f"{base}/v1")
        version = PolicyVersion(name=ADAPTER_NAME, adapter_path=str(adapter))
        t0 = time.perf_counter()
        deploy(version=version, settings=settings, max_lora_rank=args.max_lora_rank)
        times["hot-load adapter (s)"] = time.perf_counter() - t0
        on_adapter = OpenAIPolicyClient(base_url=f"{base}/v1", model=ADAPTER_NAME, **extra)
        t0 = time.perf_counter()
        samples = on_adapter.generate(conversations, params)
        times["first sampling call on it (s)"] = time.perf_counter() - t0
        times["adapter tokens/s"] = sum(count_tokens(s.text) for p in samples for s in p) / times[
            "first sampling call on it (s)"]
    return ours, times


def offline_phase(args, model_dir: Path, conversations, params, tokenizer, count_tokens) -> tuple[Variant, float]:
    from vllm import LLM
    from vllm import SamplingParams as VllmSamplingParams

    began = time.perf_counter()
    llm = LLM(model=str(model_dir), enable_lora=True, max_lora_rank=args.max_lora_rank,
              max_model_len=args.max_model_len, gpu_memory_utilization=args.gpu_memory_utilization, seed=args.seed)
    start_s = time.perf_counter() - began
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    sampling = VllmSamplingParams(n=params.n, max_tokens=params.max_new_tokens, temperature=params.temperature,
                                  top_p=params.top_p, seed=params.seed)
    offline = Variant("vLLM offline LLM.generate")

    def sample():
        outputs = llm.generate(prompts, sampling, use_tqdm=False)
        return [(o.text.strip(), o.finish_reason) for out in outputs for o in out.outputs]

    timed(offline, args.repeats, sample, count_tokens)
    return offline, start_s


# --- the run ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if reason := no_gpu_reason():
        print(f"no GPU here: {reason}. bench/vllm_sampling.py needs one CUDA GPU and vLLM "
              f"(pip install -r requirements-gpu.txt); nothing was run (exit code {EXIT_NO_GPU}).")
        return EXIT_NO_GPU
    if not vllm_installed():
        print(f"vLLM is not installed: pip install -r requirements-gpu.txt (exit code {EXIT_NO_VLLM}).")
        return EXIT_NO_VLLM

    import torch
    from transformers import AutoTokenizer

    from bench.machine import load_line, machine_line
    from feedback.policy.base import SamplingParams

    started = time.perf_counter()
    if args.model_dir:
        model_dir = Path(args.model_dir).resolve()
    else:
        from feedback.model_cache import prepare_default_model

        model_dir = prepare_default_model()
    served_name = args.served_model_name or model_dir.name
    import vllm

    print(f"# vLLM sampling: {args.prompts} prompts x n={args.n}, {args.max_new_tokens} new tokens, "
          f"temperature {args.temperature:g}, top_p {args.top_p:g}, {args.repeats} repeats")
    print(f"# {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}  {machine_line()}  GPU: "
          f"{torch.cuda.get_device_name(0)}  vLLM {vllm.__version__}  {load_line()}")
    print(f"# model: {model_dir}", flush=True)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    conversations = load_conversations(args.prompts)
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, n=args.n,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="vllm-bench-") as tmp:
        workdir = Path(tmp)
        adapter = Path(args.adapter).resolve() if args.adapter else make_adapter(model_dir, workdir / "adapter")
        try:
            ours, times = serve_phase(args, model_dir, served_name, adapter, conversations, params,
                                      count_tokens, workdir)
            offline, offline_start_s = offline_phase(args, model_dir, conversations, params, tokenizer,
                                                     count_tokens)
        except Exception as exc:  # noqa: BLE001 - reported with the step's log, as a failed run
            print(f"# failed: {type(exc).__name__}: {exc}")
            return 1
    times["offline engine start (s)"] = offline_start_s

    print("| variant | median tokens/s | tokens per call | median s per call | finish reasons |")
    print("|---|---:|---:|---:|---|")
    for v in (ours, offline):
        print(f"| {v.name} | {v.tokens_per_s():.0f} | {statistics.median(v.tokens):.0f} | "
              f"{statistics.median(v.seconds):.2f} | {dict(v.finish)} |")
    print("; ".join(f"{name} {value:.2f}" for name, value in times.items()))
    ratio = ours.tokens_per_s() / offline.tokens_per_s()
    total = time.perf_counter() - started
    print(f"ours/vLLM offline = {ratio:.2f} (goal >= {GOAL_RATIO}: {'met' if ratio >= GOAL_RATIO else 'NOT met'})")
    print(f"hot-load adapter = {times['hot-load adapter (s)']:.2f} s, then first sample from it = "
          f"{times['first sampling call on it (s)']:.2f} s")
    print(f"total wall time = {total:.0f} s (limit {TIME_LIMIT_S} s: {'met' if total < TIME_LIMIT_S else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
