"""Every code block of the seed "Advanced Automatic Differentiation" tutorial (MindSpore), on graphad.

Run: python examples/seed_grad_tutorial.py. Each section prints what the tutorial prints; the
test suite (tests/test_seed_examples.py) calls `run()` and asserts the same values.
"""
import numpy as np

import graphad as ms  # the tutorial's `import mindspore as ms`
from graphad import Tensor, nn, ops


def run(verbose: bool = True) -> dict:
    out = {}

    def show(key, value):
        out[key] = value
        if verbose:
            print(value)

    # ---- First-order derivation: inputs x and y, Net with Parameter z
    x = Tensor([3.0], dtype=ms.float32)
    y = Tensor([5.0], dtype=ms.float32)

    class Net(nn.Cell):
        def __init__(self):
            super(Net, self).__init__()
            self.z = ms.Parameter(ms.Tensor(np.array([1.0], np.float32)), name='z')

        def construct(self, x, y):
            out = x * x * y * self.z
            return out

    net = Net()
    grad_fn = ms.grad(net, grad_position=(0, 1))
    gradients = grad_fn(x, y)
    show("grad_inputs", gradients)                       # (30, 9)

    params = ms.ParameterTuple(net.trainable_params())
    output = ms.grad(net, grad_position=None, weights=params)(x, y)
    show("grad_weights", output)                         # (45,)

    # ---- Returning auxiliary variables
    net = nn.Dense(10, 1)
    loss_fn = nn.MSELoss()

    def forward(inputs, labels):
        logits = net(inputs)
        loss = loss_fn(logits, labels)
        return loss, logits

    inputs = Tensor(np.random.randn(16, 10).astype(np.float32))
    labels = Tensor(np.random.randn(16, 1).astype(np.float32))
    weights = net.trainable_params()  # noqa: F841  (the tutorial builds it and does not use it)
    grad_fn = ms.grad(forward, grad_position=0, weights=None, has_aux=True)
    inputs_gradient, (aux_logits,) = grad_fn(inputs, labels)
    show("aux", (len(inputs_gradient), aux_logits.shape))  # 16, (16, 1)
    out["aux_inputs"] = (inputs, labels, net, inputs_gradient, aux_logits)

    # ---- Stopping gradient computation
    class Net2(nn.Cell):
        def __init__(self):
            super(Net2, self).__init__()

        def construct(self, x, y):
            out1 = x * y
            out2 = x * y
            out2 = ops.stop_gradient(out2)  # Stop computing the gradient of the out2 operator.
            out = out1 + out2
            return out

    show("stop_gradient", ms.grad(Net2())(x, y))         # [5.0]

    class Net3(nn.Cell):
        def construct(self, x, y):
            out1 = x * y
            out2 = x * y
            out = out1 + out2
            return out

    show("no_stop_gradient", ms.grad(Net3())(x, y))      # [10.0]

    # ---- Single-input single-output high-order derivative
    class SinNet(nn.Cell):
        def __init__(self):
            super(SinNet, self).__init__()
            self.sin = ops.Sin()

        def construct(self, x):
            return self.sin(x)

    x_train = ms.Tensor(np.array([3.1415926]), dtype=ms.float32)
    firstgrad = ms.grad(SinNet())
    secondgrad = ms.grad(firstgrad)
    show("second_sin", np.around(secondgrad(x_train).asnumpy(), decimals=2))   # [-0.]

    # ---- Single-input multi-output high-order derivative
    class SinCosNet(nn.Cell):
        def __init__(self):
            super(SinCosNet, self).__init__()
            self.sin = ops.Sin()
            self.cos = ops.Cos()

        def construct(self, x):
            return self.sin(x), self.cos(x)

    secondgrad = ms.grad(ms.grad(SinCosNet()))
    show("second_sincos", np.around(secondgrad(x_train).asnumpy(), decimals=2))  # [1.]

    # ---- Multiple-input multiple-output high-order derivative
    class MimoNet(nn.Cell):
        def __init__(self):
            super(MimoNet, self).__init__()
            self.sin = ops.Sin()
            self.cos = ops.Cos()

        def construct(self, x, y):
            out1 = self.sin(x) - self.cos(y)
            out2 = self.cos(x) - self.sin(y)
            return out1, out2

    y_train = ms.Tensor(np.array([3.1415926]), dtype=ms.float32)
    firstgrad = ms.grad(MimoNet(), grad_position=(0, 1))
    secondgrad = ms.grad(firstgrad, grad_position=(0, 1))
    output = secondgrad(x_train, y_train)
    show("second_mimo_x", np.around(output[0].asnumpy(), decimals=2))   # [1.]
    show("second_mimo_y", np.around(output[1].asnumpy(), decimals=2))   # [-1.]
    return out


if __name__ == "__main__":
    run()
