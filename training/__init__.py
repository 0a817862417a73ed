"""Training rounds (SFT, reward model, DPO, KTO, PPO, GRPO/RLOO), the job runner and deploy.
Plain Python: no Streamlit here."""
