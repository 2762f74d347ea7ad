"""Components: the things a config names, registered by name in `runner.registry`.

`builtins` registers torch's layers, initializers, losses, optimizers and schedulers,
`layers` and `losses` the runner's own, `datasets/` the loaders (XOR, MNIST, CSV tables),
`plugins` imports a user's modules (`plugins: [...]`) so their `@LAYERS.register(...)` run.
May import: `runner.registry`, `runner.training`, `runner.errors`.
"""
