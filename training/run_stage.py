"""Run one stage from files, with no database: the entry point for `accelerate launch`.

    python -m feedback export --format dpo --out dpo.jsonl
    accelerate launch --multi_gpu --num_processes 8 -m training.run_stage \
        --stage dpo --rows dpo.jsonl --model-dir .cache/models/SmolLM2-135M-Instruct \
        --output-dir runs/dpo-1 --config '{"max_steps": 500, "per_device_train_batch_size": 8}'

DeepSpeed or FSDP come from `accelerate config` (or --config_file): the TRL trainers and our PPO
take their distribution from accelerate, so the stage code is the same on 1 CPU and 64 GPUs.
The adapter it writes can be registered as a policy version and deployed like any round's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from feedback.config_fields import add_arguments, flag_values
from feedback.errors import UserError


def make_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The flags; with `stage`, also one flag per field of that stage's config (its help and default
    included: `--stage dpo --help` lists them)."""
    from training.stages import STAGES

    parser = argparse.ArgumentParser(prog="python -m training.run_stage", description=__doc__.split("\n")[0])
    parser.add_argument("--stage", required=True, choices=STAGES.names())
    parser.add_argument("--rows", required=True, help="JSONL rows in the stage's TRL columns")
    parser.add_argument("--eval-rows", help="JSONL rows held out for evaluation (reward stage)")
    parser.add_argument("--model-dir", required=True, help="the base model directory")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--parent-adapter", help="continue training this LoRA adapter")
    parser.add_argument("--reference-adapter", help="reference policy = base + this adapter (default: the base)")
    parser.add_argument("--grader", help="grader spec giving the reward (grpo, rloo, ppo)")
    parser.add_argument("--reward-model-dir", help="a trained reward model (ppo)")
    parser.add_argument("--config", default="{}", help="JSON object of stage settings (the flags below override it)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output-dir")
    if stage in STAGES:
        add_arguments(parser.add_argument_group(f"{stage} settings"), STAGES.get(stage).config)
    return parser


def _rows(path: str | None) -> list[dict]:
    if not path:
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    from training.stages import STAGES
    from training.stages.base import StageInputs

    # Which stage first (without --help, which must wait for that stage's flags), then everything.
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--stage")
    args = make_parser(peek.parse_known_args(argv)[0].stage).parse_args(argv)
    try:
        chosen = STAGES.get(args.stage)
        cfg = chosen.config(**{**json.loads(args.config), **flag_values(args, chosen.config)})
        reward_funcs = []
        if args.grader:
            from judges.graders import as_reward_func, parse_grader

            reward_funcs = [as_reward_func(parse_grader(args.grader))]
        inputs = StageInputs(model_dir=args.model_dir, output_dir=Path(args.output_dir),
                             parent_adapter=args.parent_adapter, reference_adapter=args.reference_adapter,
                             train_rows=_rows(args.rows), eval_rows=_rows(args.eval_rows), reward_funcs=reward_funcs,
                             reward_model_dir=args.reward_model_dir, resume=args.resume)
        result = chosen.main(cfg, inputs)
    except (UserError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"adapter_dir": str(result.adapter_dir) if result.adapter_dir else None,
                      "model_dir": str(result.model_dir) if result.model_dir else None,
                      "metrics": result.metrics}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
