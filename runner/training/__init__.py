"""Training's helpers: what the loop (`runner.loop`) and the recipe need beyond torch.

`metrics` (task metrics, the primary metric and its direction), `checkpoint` (save and
restore every state, atomically), `signals` and `sweep_signals` (Ctrl-C and SIGTERM stop
after the epoch), `device` (device and threads), `seeding`, `progress` (the epoch line),
`memory` (what the host has left), `fast_exit` (leave at once, output flushed),
`torch_internals` (torch's private names: optimizers that never import its compiler). Knows
nothing of Hydra, OmegaConf or MLflow (checked). May import: `runner.errors`.
"""
