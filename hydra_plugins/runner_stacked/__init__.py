"""`hydra/launcher=stacked`: a sweep's seed groups trained as stacked models (runner)."""
