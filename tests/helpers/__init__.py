"""Helpers shared by the test modules: a package, so pytest does not collect it, and no test module imports
another. `data`: tiny on-disk datasets and the shared data folder; `cli`: subprocess runs of gldfa_jax.main;
`events`: reading TensorBoard event files back."""
