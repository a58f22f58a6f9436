"""Keras Tuner search over the metaplasticity m and the learning rate (not built yet)."""
