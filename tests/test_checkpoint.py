"""Checkpoints (issue 14): nn.save_checkpoint / nn.load_checkpoint on safetensors files.

Round trips are bit-identical (every dtype, bfloat16 included, after eager training steps); every
refusal (truncated, corrupted header or bytes, missing or extra name, wrong shape or dtype, not a
graphad checkpoint) raises a GraphadError naming the file and leaves the model unchanged.
"""
import json
import os

import numpy as np
import pytest

import graphad as gd
from graphad import nn, ops
from graphad.errors import ArtifactError, DTypeError, GraphadError, ShapeError

F32 = np.float32


class Net(nn.Cell):
    def __init__(self, dtype=gd.float32):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, has_bias=True, dtype=dtype)
        self.bn = nn.BatchNorm2d(3, dtype=dtype)
        self.blocks = nn.CellList([nn.Dense(3 * 4 * 4, 5, dtype=dtype), nn.Dense(5, 2, dtype=dtype)])
        self.drop = nn.Dropout(0.9, seed=3)

    def construct(self, x):
        x = ops.relu(self.bn(self.conv(x)))
        x = ops.reshape(x, (x.shape[0], -1))
        return self.blocks[1](self.drop(self.blocks[0](x)))


def _snapshot(cell):
    return {n: (p.asnumpy().copy(), p.dtype) for n, p in cell.parameters_and_names()}


def _assert_same(cell, snap):
    now = _snapshot(cell)
    assert list(now) == list(snap)
    for n, (a, d) in snap.items():
        assert now[n][1] is d
        assert now[n][0].tobytes() == a.tobytes(), n


def _train(net, steps=3):
    """A few eager SGD steps by hand with set_data (BatchNorm's statistics and Dropout's seed move too)."""
    rng = np.random.default_rng(0)
    x = gd.Tensor(rng.standard_normal((4, 2, 4, 4)).astype(F32))
    y = gd.Tensor(rng.standard_normal((4, 2)).astype(F32))
    params = net.trainable_params()
    grad = gd.value_and_grad(lambda a, b: nn.MSELoss()(net(a), b), None, weights=params)
    for _ in range(steps):
        _, gs = grad(x, y)
        for p, g in zip(params, gs):
            p.set_data(p - 0.1 * g)


@pytest.fixture
def saved(tmp_path):
    net = Net()
    _train(net)
    path = tmp_path / "model.safetensors"
    nn.save_checkpoint(net, path)
    return net, str(path)


def test_round_trip_is_bit_identical_after_training(saved, tmp_path):
    net, path = saved
    names = [n for n, _ in net.parameters_and_names()]
    assert "bn.moving_mean" in names and "blocks.1.weight" in names and "drop.seed" in names
    assert int(net.drop.seed.asnumpy()) == 6  # three training calls advanced it
    fresh = Net()
    out = nn.load_checkpoint(path, fresh)
    _assert_same(fresh, _snapshot(net))
    assert sorted(out) == sorted(names)
    x = gd.Tensor(np.ones((1, 2, 4, 4), F32))
    net.set_train(False)
    fresh.set_train(False)
    np.testing.assert_array_equal(net(x).asnumpy(), fresh(x).asnumpy())
    # no temporary file is left beside the checkpoint
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_file_is_plain_safetensors_with_version_metadata(saved):
    _, path = saved
    from safetensors import safe_open
    with open(path, "rb") as f:
        blob = f.read()
    assert b"pickle" not in blob[:8 + int.from_bytes(blob[:8], "little")]
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
        assert meta["format"] == "graphad-checkpoint" and meta["graphad_checkpoint_format"] == "1"
        assert "blocks.0.weight" in list(f.keys())


@pytest.mark.parametrize("dtype", [gd.float16, gd.bfloat16, gd.float64])
def test_round_trip_other_float_dtypes(tmp_path, dtype):
    a = Net(dtype)
    b = Net(dtype)
    path = tmp_path / "m.ckpt"
    nn.save_checkpoint(a, path)
    nn.load_checkpoint(path, b)
    _assert_same(b, _snapshot(a))
    assert b.conv.weight.dtype is dtype


def test_integer_and_bool_parameters_round_trip(tmp_path):
    class Ints(nn.Cell):
        def __init__(self, v):
            super().__init__()
            self.i32 = gd.Parameter(np.arange(6, dtype=np.int32).reshape(2, 3) * v, requires_grad=False)
            self.i64 = gd.Parameter(np.array(2 ** 40 + v, np.int64), requires_grad=False)
            self.b = gd.Parameter(np.array([True, False]) ^ bool(v % 2), requires_grad=False)
            self.empty = gd.Parameter(np.zeros((0, 3), F32) + v)

    a, b = Ints(3), Ints(4)
    nn.save_checkpoint(a, tmp_path / "i.ckpt")
    nn.load_checkpoint(tmp_path / "i.ckpt", b)
    _assert_same(b, _snapshot(a))


class _Complex(nn.Cell):
    def __init__(self, v):
        super().__init__()
        z = np.array([1 + 2j, -0.0 - 3.5j, complex(np.nan, 1), complex(np.inf, -0.0)], np.complex64) * v
        self.z = gd.Parameter(z.reshape(2, 2), name="z")
        self.w = gd.Parameter(np.array([1e-300 + 5j, -2j], np.complex128) * v, name="w")
        self.r = gd.Parameter(np.array([1.5, -0.0], F32) * v, name="r")


def test_complex_parameters_round_trip_bit_for_bit(tmp_path):
    """safetensors has no complex dtype: the parts are stored along a last axis of 2 and marked,
    and come back bit for bit (signed zeros, NaN, inf); such a file is format version 2, one
    without complex Parameters stays version 1 (what older graphad reads)."""
    a, b = _Complex(1), _Complex(3)
    path = tmp_path / "c.ckpt"
    nn.save_checkpoint(a, path)
    nn.load_checkpoint(path, b)
    for name in ("z", "w", "r"):
        x, y = getattr(a, name).asnumpy(), getattr(b, name).asnumpy()
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), name
    tensors, meta = _contents(path)
    assert meta["graphad_checkpoint_format"] == "2" and meta["complex:z"] == "complex64"
    assert tensors["z"].dtype == np.float32 and tensors["z"].shape == (2, 2, 2)
    assert tensors["w"].dtype == np.float64 and tensors["w"].shape == (2, 2)
    loaded = nn.load_checkpoint(path)
    assert loaded["w"].dtype == gd.complex128 and loaded["z"].shape == (2, 2)
    # a forged marker or a marker for a tensor of the wrong layout is refused
    _rewrite(path, tensors, dict(meta, **{"complex:r": "complex128"}))  # r is float32
    with pytest.raises(ArtifactError, match="'r' is marked complex128"):
        nn.load_checkpoint(path, _Complex(1))
    _rewrite(path, tensors, dict(meta, **{"complex:nope": "complex64"}))
    with pytest.raises(ArtifactError, match="'nope'"):
        nn.load_checkpoint(path, _Complex(1))
    nn.save_checkpoint(Net(), path)
    assert _contents(path)[1]["graphad_checkpoint_format"] == "1"


def test_save_overwrites_atomically(saved):
    net, path = saved
    other = Net()
    nn.save_checkpoint(other, path)
    fresh = Net()
    fresh.conv.weight.set_data(np.zeros((3, 2, 3, 3)))
    nn.load_checkpoint(path, fresh)
    _assert_same(fresh, _snapshot(other))


def _refused(path, cell, exc, *words):
    before = _snapshot(cell)
    with pytest.raises(exc) as info:
        nn.load_checkpoint(path, cell)
    assert isinstance(info.value, GraphadError)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, msg
    _assert_same(cell, before)


def test_truncated_file_is_refused(saved):
    _, path = saved
    with open(path, "rb") as f:
        blob = f.read()
    for cut in (len(blob) - 1, len(blob) // 2, 20, 4, 0):
        with open(path, "wb") as f:
            f.write(blob[:cut])
        _refused(path, Net(), ArtifactError, "truncated or corrupted")


def test_corrupted_header_is_refused(saved):
    _, path = saved
    with open(path, "rb") as f:
        blob = bytearray(f.read())
    n = int.from_bytes(blob[:8], "little")
    bad = bytearray(blob)
    bad[8 + n // 2] = ord("#")  # invalid JSON
    with open(path, "wb") as f:
        f.write(bad)
    _refused(path, Net(), ArtifactError)
    bad = bytearray(blob)
    bad[:8] = (n + 10 ** 6).to_bytes(8, "little")  # header length beyond the file
    with open(path, "wb") as f:
        f.write(bad)
    _refused(path, Net(), ArtifactError)


def test_corrupted_tensor_bytes_are_refused_naming_the_parameter(saved):
    net, path = saved
    with open(path, "rb") as f:
        blob = bytearray(f.read())
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    start, _ = header["blocks.1.weight"]["data_offsets"]
    blob[8 + n + start + 1] ^= 0x40
    with open(path, "wb") as f:
        f.write(blob)
    _refused(path, Net(), ArtifactError, "'blocks.1.weight'", "checksum")


def _rewrite(path, tensors, meta):
    """A safetensors file with these arrays and this metadata (a forged or foreign checkpoint)."""
    import safetensors
    specs = {k: safetensors.TensorSpec(dtype=v.dtype.name, shape=list(v.shape), data_ptr=v.ctypes.data,
                                       data_len=v.nbytes) for k, v in tensors.items()}
    data = bytes(safetensors.serialize(specs, metadata=meta))
    with open(path, "wb") as f:
        f.write(data)


def _contents(path):
    from safetensors import safe_open
    with safe_open(path, framework="numpy") as f:
        return {k: np.ascontiguousarray(f.get_tensor(k)) for k in f.keys()}, dict(f.metadata())


def test_missing_and_extra_names_are_refused(saved):
    net, path = saved
    tensors, meta = _contents(path)
    t2 = {k: v for k, v in tensors.items() if k != "bn.gamma"}
    m2 = {k: v for k, v in meta.items() if k != "sha256:bn.gamma"}
    _rewrite(path, t2, m2)
    _refused(path, Net(), ArtifactError, "'bn.gamma'")

    class Bigger(Net):
        def __init__(self):
            super().__init__()
            self.extra = gd.Parameter(np.zeros(2, F32))

    _refused(path, Bigger(), ArtifactError, "'bn.gamma'")
    nn.save_checkpoint(Bigger(), path)
    _refused(path, Net(), ArtifactError, "'extra'", "does not have")


def test_wrong_shape_and_dtype_are_refused(saved, tmp_path):
    _, path = saved

    class Wide(Net):
        def __init__(self):
            super().__init__()
            self.blocks[1] = nn.Dense(5, 3)

    _refused(path, Wide(), ShapeError, "'blocks.1.weight'", "(2, 5)", "(3, 5)")
    _refused(path, Net(gd.float64), DTypeError, "float32", "float64")
    nn.save_checkpoint(Net(gd.bfloat16), path)
    _refused(path, Net(), DTypeError, "bfloat16")


def test_forged_checkpoints_are_refused(saved):
    net, path = saved
    tensors, meta = _contents(path)
    _rewrite(path, tensors, {k: v for k, v in meta.items() if k != "format"})
    _refused(path, Net(), ArtifactError, "not a graphad checkpoint")
    _rewrite(path, tensors, dict(meta, graphad_checkpoint_format="3"))
    _refused(path, Net(), ArtifactError, "version 3")
    _rewrite(path, tensors, {k: v for k, v in meta.items() if k != "sha256:conv.bias"})
    _refused(path, Net(), ArtifactError, "'conv.bias'", "checksum")
    t = dict(tensors)
    t["conv.bias"] = t["conv.bias"] + np.float32(1)
    _rewrite(path, t, meta)
    _refused(path, Net(), ArtifactError, "'conv.bias'")


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read"):
        nn.load_checkpoint(tmp_path / "nope.ckpt", Net())
    with pytest.raises(GraphadError, match="Cell"):
        nn.save_checkpoint({"a": 1}, tmp_path / "x.ckpt")
    assert not os.path.exists(tmp_path / "x.ckpt")


def test_load_without_a_cell_returns_the_tensors(saved):
    net, path = saved
    out = nn.load_checkpoint(path)
    snap = _snapshot(net)
    assert sorted(out) == sorted(snap)
    for n, t in out.items():
        assert t.asnumpy().tobytes() == snap[n][0].tobytes() and t.dtype is snap[n][1]
