"""aiml024 vs FLAML vs AutoGluon vs default LightGBM at the same wall-clock budget.

Entry point: `python -m bench.automl.run` (see bench/README.md). Kept import-light: the runner
modules under `runners/` execute inside the peers' own virtualenvs.
"""
