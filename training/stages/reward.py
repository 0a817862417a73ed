"""A Bradley-Terry reward model from preference pairs: prompt/chosen/rejected(/margin) rows.

The model is the base policy with a one-output score head (AutoModelForSequenceClassification,
num_labels=1). By default all weights are trained: for the small default model a full fine-tune
is cheap, learns more than a low-rank update, and gives a plain model directory that PPO and
GRPO/RLOO load without PEFT. With use_lora on, a LoRA (task SEQ_CLS, which also trains the score
head) is trained and merged before saving. Either way the artifact is a full model directory.

Held-out pairwise accuracy is measured here, with the trained model: the share of eval pairs
whose chosen response scores higher than the rejected one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.stages.base import (
    CommonConfig,
    StageInputs,
    StageResult,
    cfg_field,
    lora_config,
    rows_dataset,
    run_trainer,
    trainer_kwargs,
)


@dataclass
class RewardStageConfig(CommonConfig):
    use_lora: bool = cfg_field(False, "Train a LoRA (merged before saving) instead of all weights; a full "
                                      "fine-tune suits small reward models.")
    learning_rate: float = cfg_field(1e-5, "Peak learning rate (full fine-tuning wants ~1e-5; LoRA ~1e-4).")
    center_rewards_coefficient: float | None = cfg_field(
        0.01, "Weight of a penalty on the squared mean reward, keeping rewards centred on zero so they can be "
              "used without normalisation (0.01 as in the paper; None: off).")
    eval_batch_size: int = cfg_field(8, "Pairs scored at a time for the held-out accuracy.")


CONFIG = RewardStageConfig


def _conversation(prompt: Any, response: Any) -> Any:
    """prompt + response as one conversation (chat messages) or one string."""
    if isinstance(prompt, list):
        return prompt + (response if isinstance(response, list) else [{"role": "assistant", "content": response}])
    return prompt + response


def _token_ids(tokenizer, conversation: Any) -> list[int]:
    """Token ids the way TRL's RewardTrainer builds them: the chat template for messages, plain
    text + EOS otherwise."""
    if isinstance(conversation, list):
        return list(tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"])
    text = conversation if conversation.endswith(tokenizer.eos_token) else conversation + tokenizer.eos_token
    return tokenizer(text)["input_ids"]


@torch.no_grad()
def reward_scores(model, tokenizer, conversations: list[Any], *, batch_size: int = 8,
                  max_length: int | None = None) -> list[float | None]:
    """The reward of each conversation (chat messages, or prompt+response text); None where it is
    longer than max_length (TRL leaves such pairs out of training too)."""
    was_training = model.training
    model.eval()
    ids = [_token_ids(tokenizer, c) for c in conversations]
    scores: list[float | None] = [None] * len(ids)
    todo = [i for i, seq in enumerate(ids) if max_length is None or len(seq) <= max_length]
    device = next(model.parameters()).device
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        # right padding with the pad token: the score is read at the last non-pad token
        batch = tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, padding=True, padding_side="right",
                              return_tensors="pt")
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits[:, 0]
        for i, value in zip(chunk, logits.tolist()):
            scores[i] = float(value)
    model.train(was_training)
    return scores


def pairwise_accuracy(model, tokenizer, rows: list[dict[str, Any]], *, batch_size: int = 8,
                      max_length: int | None = None) -> tuple[float | None, int]:
    """(share of pairs with reward(chosen) > reward(rejected), number of pairs scored)."""
    chosen = reward_scores(model, tokenizer, [_conversation(r["prompt"], r["chosen"]) for r in rows],
                           batch_size=batch_size, max_length=max_length)
    rejected = reward_scores(model, tokenizer, [_conversation(r["prompt"], r["rejected"]) for r in rows],
                             batch_size=batch_size, max_length=max_length)
    pairs = [(c, r) for c, r in zip(chosen, rejected) if c is not None and r is not None]
    if not pairs:
        return None, 0
    return sum(c > r for c, r in pairs) / len(pairs), len(pairs)


def load_reward_model(inputs: StageInputs):
    """(model, tokenizer): the base model with a fresh one-output score head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(inputs.model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(inputs.model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return model, tokenizer


def main(cfg: RewardStageConfig, inputs: StageInputs) -> StageResult:
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    dataset = rows_dataset(inputs.train_rows, {"prompt", "chosen", "rejected"}, "reward")
    set_seed(cfg.seed)  # the score head is initialised randomly
    model, tokenizer = load_reward_model(inputs)
    args = RewardConfig(**trainer_kwargs(cfg, inputs), max_length=cfg.max_length,
                        center_rewards_coefficient=cfg.center_rewards_coefficient)
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            callbacks=list(inputs.callbacks),
                            peft_config=lora_config(cfg, task_type="SEQ_CLS") if cfg.use_lora else None)
    metrics = run_trainer(trainer, inputs, log_keys=("accuracy", "margin", "mean_reward"))

    from peft import PeftModel

    trained = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(trained, PeftModel):
        trained = trained.merge_and_unload()
    model_dir = Path(inputs.output_dir) / "reward_model"
    trained.save_pretrained(model_dir)  # safetensors
    tokenizer.save_pretrained(model_dir)

    accuracy, pairs = pairwise_accuracy(trained, tokenizer, inputs.eval_rows, batch_size=cfg.eval_batch_size,
                                        max_length=cfg.max_length)
    metrics.update(eval_accuracy=accuracy, eval_pairs=pairs)
    return StageResult(model_dir=model_dir, metrics=metrics)
