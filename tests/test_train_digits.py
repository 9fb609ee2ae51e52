"""examples/train_digits.py, shortened: the CNN learns the bundled digits in graph mode, and the
compiled train step (TVM) gives the parameters the NumPy reference interpreter gives."""
import numpy as np
import pytest

import graphad as gd

train_digits = pytest.importorskip("train_digits")  # examples/ is on sys.path (conftest.py)


def test_the_held_out_quarter_is_a_quarter():
    x_train, y_train, x_test, y_test = train_digits.load_digits(0)
    assert x_train.shape == (1348, 1, 8, 8) and x_test.shape == (449, 1, 8, 8)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(y_test)) == set(range(10))


def test_compiled_training_learns_the_digits():
    gd.set_backend("tvm")
    try:
        net, losses, acc, _ = train_digits.train(epochs=5, quiet=True)
    finally:
        gd.set_backend("numpy")
    assert losses[-1] < 0.5 * losses[0], losses
    assert losses[-1] < 0.8, losses
    assert acc > 0.8, acc


def test_compiled_and_interpreted_steps_give_the_same_parameters():
    x_train, y_train, _, _ = train_digits.load_digits(0)
    finals = {}
    for backend in ("tvm", "numpy"):
        gd.set_backend(backend)
        try:
            gd.set_seed(3)
            net = train_digits.DigitsCNN()
            step = train_digits.make_step(net)
            for i in range(10):
                sl = slice(64 * i, 64 * (i + 1))
                step(gd.Tensor(x_train[sl]), gd.Tensor(y_train[sl]))
            finals[backend] = {n: p.asnumpy().copy() for n, p in net.parameters_and_names()}
        finally:
            gd.set_backend("numpy")
    assert finals["tvm"].keys() == finals["numpy"].keys()
    for name in finals["tvm"]:
        np.testing.assert_allclose(finals["tvm"][name], finals["numpy"][name], rtol=2e-4, atol=2e-5, err_msg=name)
