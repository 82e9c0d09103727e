"""Ablation studies: config variants of the paper's tables, run, collected and tabulated
(`python -m gldfa_jax.ablation`)."""
