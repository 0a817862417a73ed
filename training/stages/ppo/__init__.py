"""PPO for language models, the project's own: TRL removed PPOTrainer in 1.13, so this package is
the whole algorithm on torch + transformers + peft + accelerate (Ouyang et al. 2022 / Ziegler et
al. 2019 style, as the old TRL PPOTrainer did it).

One step = one rollout followed by a few epochs of clipped updates on it:

    1. sample completions for `rollout_batch_size` prompts from the current policy    rollout.py
    2. score them: reward functions (graders, judges) and/or a trained reward model    rewards.py
       -> one scalar each
    3. per-token reward = -kl_coef * (logp - ref_logp), plus the scalar at the         update.py
       completion's last token
    4. GAE over the completion tokens with the value head's estimates -> advantages    update.py
       and returns
    5. `ppo_epochs` passes of mini-batches: clipped policy loss + vf_coef * clipped    update.py
       value loss

stage.py's `main` is the loop around them: prompt order, logs, the KL coefficient, checkpoints
(checkpoint.py) and the round's callbacks (callbacks.py). config.py has the hyper-parameters.

The policy is the base model with a LoRA adapter (what vLLM hot-loads); the value head is a single
Linear on the policy's last hidden state, trained jointly (model.py). The reference is the same
network with the adapter switched off, so it costs no extra memory, unless the round names a
reference adapter.

Everything runs through `accelerate.Accelerator`, so `accelerate launch -m ...` on N GPUs runs N
copies that each sample their own share of prompts and average gradients (DDP). Batch sizes are
per device. Checkpoints are safetensors + JSON only: nothing is pickled, so a checkpoint from an
untrusted directory cannot execute code on resume.
"""
