"""Experiment configs: each module's get_config() returns an ml_collections.ConfigDict derived from the package
defaults (gldfa_jax/config.py). Private modules (_*.py) hold shared helpers."""
