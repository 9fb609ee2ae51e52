"""graphad's main demo (`make demo`): trace the seed's `forecast` and `Net`, show their IR, evaluate
them, and show the derivative graphs graphad builds for them (compiled through TVM when the
compiled backend is available, else run by the NumPy reference interpreter)."""
import numpy as np

import graphad as gd
from graphad import nn, ops


def forecast(weight, bias, x):
    return ops.dense(x, weight, bias).tanh()


class Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.z = gd.Parameter(gd.Tensor(np.array([1.0], np.float32)), name="z")

    def construct(self, x, y):
        return x * x * y * self.z


def banner(text):
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def main():
    gd.set_seed(1)
    D = 16
    weight, bias, x = ops.randn(D, D), ops.randn(D), ops.randn(D)

    banner("forecast(weight, bias, x) = tanh(x @ weight.T + bias): traced IR")
    print(gd.make_graph(forecast)(weight, bias, x))
    banner("forecast evaluated")
    print(gd.jit(forecast)(weight, bias, x))

    banner("jacrev(forecast, grad_position=2): derivative graph")
    print(gd.make_graph(gd.jacrev(forecast, grad_position=2))(weight, bias, x))
    jac = gd.jacrev(forecast, grad_position=2)(weight, bias, x)
    closed = (1 - np.tanh(weight.asnumpy() @ x.asnumpy() + bias.asnumpy()) ** 2)[:, None] * weight.asnumpy()
    print("jacobian", jac.shape, "max |jacrev - closed form| =", float(np.abs(jac.asnumpy() - closed).max()))

    net = Net()
    xs, ys = gd.Tensor([3.0], dtype=gd.float32), gd.Tensor([5.0], dtype=gd.float32)
    banner("Net: x * x * y * z (z a Parameter, lifted as a graph input)")
    print(gd.make_graph(net)(xs, ys))
    banner("Net evaluated, and grad(Net, grad_position=(0, 1)) and the weight gradient")
    print(net(xs, ys))
    print(gd.grad(net, grad_position=(0, 1))(xs, ys))
    print(gd.grad(net, grad_position=None, weights=gd.ParameterTuple(net.trainable_params()))(xs, ys))
    banner("grad(Net, grad_position=(0, 1)): derivative graph")
    print(gd.make_graph(gd.grad(net, grad_position=(0, 1)))(xs, ys))


if __name__ == "__main__":
    main()
