"""What the export tests share: train TRL's trainer for two steps on an exported file as it is,
and check that it really trained (the weights moved, the losses are finite)."""
from __future__ import annotations

import math
from pathlib import Path


def train_and_check(trainer_cls, config_cls, data_path: Path, model, tokenizer, out_dir: Path, **extra) -> None:
    """Two steps of `trainer_cls` on the file as it is; the weights move and the losses are finite."""
    import torch
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(data_path), split="train")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = config_cls(
        output_dir=str(out_dir), use_cpu=True, bf16=False, max_steps=2, per_device_train_batch_size=2,
        learning_rate=1e-3, report_to=[], save_strategy="no", logging_steps=1, max_length=128,
        activation_checkpointing=False, dataloader_num_workers=0, seed=0, **extra,
    )
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()

    assert trainer.state.global_step == 2
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses), losses
    assert math.isfinite(result.training_loss)
    changed = [name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())]
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} parameters moved"


def causal_lm(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
