"""Built-in registry entries: the torch layers, initializers, losses, optimizers,
schedulers and model templates that the book's chapters use, and (by importing
`runner.components.datasets`) the dataset loaders. Custom layers live in `runner.components.layers`.

Imported once, by `runner.components.plugins.load_components`."""

from __future__ import annotations

from torch import nn, optim

from runner.components import datasets, layers, losses  # noqa: F401  (datasets registers its loaders)
from runner.registry import INITIALIZERS, LAYERS, LOSSES, OPTIMIZERS, SCHEDULERS, TEMPLATES

# `infer` names the constructor argument filled from the incoming per-sample shape, and
# which dimension of that shape it takes (-1: features of a vector, 0: channels).
# `output`: what a squashing layer emits (`same`: values pass on), checked against the loss
# (runner/spec/outputs.py); `tasks`: the only tasks it suits as the last one.
LAYERS.register("linear", nn.Linear, infer={"in_features": -1})
LAYERS.register("noisy_linear", layers.NoisyLinear, infer={"in_features": -1})
LAYERS.register("identity", nn.Identity, output="same")
LAYERS.register("relu", nn.ReLU)
LAYERS.register("leaky_relu", nn.LeakyReLU)
LAYERS.register("prelu", nn.PReLU)
LAYERS.register("elu", nn.ELU)
LAYERS.register("gelu", nn.GELU)
LAYERS.register("sigmoid", nn.Sigmoid, output="probability")
LAYERS.register("tanh", nn.Tanh, output="bounded")
LAYERS.register("softmax", nn.Softmax, output="probability", tasks=("multiclass",))
LAYERS.register("log_softmax", nn.LogSoftmax, output="log_probability", tasks=("multiclass",))
LAYERS.register("dropout", nn.Dropout, output="same")
LAYERS.register("flatten", nn.Flatten, output="same")
LAYERS.register("batchnorm1d", nn.BatchNorm1d, infer={"num_features": 0})
LAYERS.register("batchnorm2d", nn.BatchNorm2d, infer={"num_features": 0})
LAYERS.register("conv2d", nn.Conv2d, infer={"in_channels": 0})
LAYERS.register("maxpool2d", nn.MaxPool2d)
LAYERS.register("avgpool2d", nn.AvgPool2d)

INITIALIZERS.register("xavier_uniform", nn.init.xavier_uniform_)
INITIALIZERS.register("xavier_normal", nn.init.xavier_normal_)
INITIALIZERS.register("kaiming_uniform", nn.init.kaiming_uniform_)
INITIALIZERS.register("kaiming_normal", nn.init.kaiming_normal_)
INITIALIZERS.register("orthogonal", nn.init.orthogonal_)
INITIALIZERS.register("trunc_normal", nn.init.trunc_normal_)
INITIALIZERS.register("normal", nn.init.normal_)
INITIALIZERS.register("uniform", nn.init.uniform_)
INITIALIZERS.register("zeros", nn.init.zeros_)
INITIALIZERS.register("ones", nn.init.ones_)
INITIALIZERS.register("constant", nn.init.constant_)

# `tasks`: the data tasks a loss fits. `output`: what the model's last layer must emit,
# which decides how predictions become labels (probability >= 0.5, logit >= 0, argmax);
# `takes`: what else it accepts (log_softmax changes nothing under cross_entropy).
LOSSES.register("bce", nn.BCELoss, tasks=("binary",), output="probability")
LOSSES.register("bce_with_logits", nn.BCEWithLogitsLoss, tasks=("binary",), output="logits")
LOSSES.register(
    "cross_entropy",
    nn.CrossEntropyLoss,
    tasks=("multiclass",),
    output="logits",
    takes=("logits", "log_probability"),
)
LOSSES.register("nll", nn.NLLLoss, tasks=("multiclass",), output="log_probability")
LOSSES.register("mse", nn.MSELoss, tasks=("regression",), output="value")
LOSSES.register("mse_onehot", losses.OneHotMSELoss, tasks=("multiclass",), output="probability")
LOSSES.register("l1", nn.L1Loss, tasks=("regression",), output="value")
LOSSES.register("huber", nn.HuberLoss, tasks=("regression",), output="value")
LOSSES.register("smooth_l1", nn.SmoothL1Loss, tasks=("regression",), output="value")

# `fused`: devices where torch has a fused kernel; used unless the config picks foreach/fused.
OPTIMIZERS.register("sgd", optim.SGD, fused=("cpu", "cuda"))
OPTIMIZERS.register("adam", optim.Adam, fused=("cpu", "cuda"))
OPTIMIZERS.register("adamw", optim.AdamW, fused=("cpu", "cuda"))
OPTIMIZERS.register("rmsprop", optim.RMSprop)
OPTIMIZERS.register("adagrad", optim.Adagrad, fused=("cpu",))

# `from_trainer`: scheduler arguments that default to a trainer value when not given.
SCHEDULERS.register("step", optim.lr_scheduler.StepLR)
SCHEDULERS.register("multistep", optim.lr_scheduler.MultiStepLR)
SCHEDULERS.register("exponential", optim.lr_scheduler.ExponentialLR)
SCHEDULERS.register(
    "cosine", optim.lr_scheduler.CosineAnnealingLR, from_trainer={"T_max": "epochs"}
)


@TEMPLATES.register("mlp")
def mlp(
    width: int = 8,
    depth: int = 2,
    activation: str = "relu",
    dropout: float = 0.0,
    out_features: int = 1,
    out_activation: str | None = None,
    hidden: list | None = None,
) -> list[dict]:
    """`depth` hidden layers of `width` units (depth 0: a linear model), then the output.

    `hidden` lists each hidden layer's width instead (`[]`: linear, `[4, 4]`: the book's
    XOR net), so one sweep key can walk through capacities of any shape.
    """
    widths = [width] * depth if hidden is None else list(hidden)
    layers: list[dict] = []
    for units in widths:
        layers += [{"layer": "linear", "out_features": units}, {"layer": activation}]
        if dropout > 0:
            layers.append({"layer": "dropout", "p": dropout})
    layers.append({"layer": "linear", "out_features": out_features})
    if out_activation:
        layers.append({"layer": out_activation})
    return layers
