"""The package defaults (gldfa_jax/config.py): GLDFA-Net with the paper's settings (§4.1)."""

from gldfa_jax.config import get_config  # noqa: F401  (experiments derive from base.get_config())
