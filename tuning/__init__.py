"""Keras Tuner search over the metaplasticity m and the learning rate.

- `tuning.hypermodel`: `MetaplasticHyperModel`, the search space.
- `tuning.search`: `make_tuner` (trials are whole continual-learning runs scored on a
  validation split) and `summarize_search` (results table, best hyperparameters, best
  model retrained and evaluated once on the test set).
- `tuning.cli`: `python -m tuning search ...`, locally or as a distributed chief/worker.
"""
