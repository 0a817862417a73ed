"""Training stages: one module per stage, each a config dataclass (CONFIG) and main(cfg, inputs)."""
