"""bench/vllm_sampling.py off a GPU host: the "no GPU here" exit, its options, its prompts, the
adapter it hot-loads and the timing of its variants."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import sampling, vllm_sampling
from bench.vllm_sampling import EXIT_NO_GPU, Variant, load_conversations, make_adapter, make_parser, timed
from feedback.deploy import adapter_rank

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(vllm_sampling.no_gpu_reason() is None, reason="a GPU is here: the script would run")
def test_without_a_gpu_it_says_so_at_once_and_exits_77():
    began = time.monotonic()
    done = subprocess.run([sys.executable, "bench/vllm_sampling.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == EXIT_NO_GPU == 77, done.stdout + done.stderr
    assert done.stdout.startswith("no GPU here: ")
    assert "nothing was run" in done.stdout and "requirements-gpu.txt" in done.stdout
    assert time.monotonic() - began < 30  # no model load, no vLLM import: an answer, not a run


def test_options_default_to_the_issue_settings():
    args = make_parser().parse_args([])
    assert (args.prompts, args.n, args.max_new_tokens, args.temperature, args.top_p) == (16, 4, 256, 0.8, 0.95)
    assert args.max_lora_rank == 16 and args.model_dir is None and args.adapter is None
    args = make_parser().parse_args(["--model-dir", "/m", "--adapter", "/a", "--repeats", "1", "--concurrency", "16"])
    assert (args.model_dir, args.adapter, args.repeats, args.concurrency) == ("/m", "/a", 1, 16)
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--n", "four"])


def test_the_prompts_are_those_of_the_sampling_bench():
    conversations = load_conversations(16)
    assert conversations == sampling.conversations_for(16)
    assert [c[0]["content"] for c in conversations] == sampling.PROMPTS[:16]
    assert all(len(c) == 1 and c[0]["role"] == "user" for c in conversations)


def test_the_default_adapter_has_the_training_lora_shape(tiny_model_dir, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_rank(str(adapter)) == 8 <= make_parser().parse_args([]).max_lora_rank
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}
    assert (adapter / "adapter_model.safetensors").exists()


def test_timed_warms_up_once_then_counts_every_sample():
    calls = []

    def call():
        calls.append(1)
        return [("one two", "stop"), ("three", "length")]

    variant = Variant("fake")
    timed(variant, 3, call, count_tokens=lambda text: len(text.split()))
    assert len(calls) == 4 and variant.tokens == [3, 3, 3] and len(variant.seconds) == 3
    assert variant.finish == {"stop": 3, "length": 3}
    assert variant.tokens_per_s() > 0
