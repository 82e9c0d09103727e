"""gldfa-jax: GLDFA-Net (Global-Local Dynamic Feature Alignment) for person re-ID in JAX/Flax."""
