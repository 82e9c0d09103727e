"""Dataset readers, samplers, augmentation and dataset generators for person re-ID."""
