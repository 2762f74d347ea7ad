"""Config: what the user asked for, before any work.

`spec/` turns the composed config into a validated `RunSpec` (every check that needs no
data), `override_keys` and `choices` catch typos in command-line keys and group options,
`project` finds the shipped and the user's config folders, `launch` reads what Hydra says
about this launch (overrides, job number, sweep). Knows nothing of MLflow or torch's
training. May import: `runner.components`, `runner.registry`, `runner.training`,
`runner.errors`.
"""
