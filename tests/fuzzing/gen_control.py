"""The fuzzer's moves for control flow and regions: cond/switch, scan (and int-bound fori_loop),
while_loop, checkpoint, custom_jvp and custom_vjp.

Each move builds its regions through the user API (gd.cond, gd.scan, ...) on pool values, so
the regions close over other pool values as a user's functions do (captures become operands). The
bodies are short elementwise chains drawn from ops that are safe in the program's mode (smooth
programs get smooth, bounded ops, so the finite-difference checks hold through the loop). The
custom rules are the true derivatives: the checks compare them with finite differences, forward
with reverse mode, and the compiled program with the interpreter, like any other node.

Imported by `fuzzing/__init__.py`: it registers the moves on `gen._Gen` (MOVE_OF, MOVES, WEIGHTED).
"""
from __future__ import annotations


import graphad as gd
from graphad import ops

from . import gen as G

# elementwise steps used in bodies: bounded in smooth mode (loops must not blow up or hit a
# domain edge, or finite differences lose their meaning)
_SMOOTH = {"sin": ops.sin, "cos": ops.cos, "tanh": ops.tanh, "sigmoid": ops.sigmoid,
           "half": lambda x: x * 0.5, "neg": ops.neg, "shift": lambda x: x + 0.25}
_ANY = dict(_SMOOTH, exp=ops.exp, square=ops.square, abs=ops.abs, floor=ops.floor, relu=ops.relu,
            recip=ops.reciprocal, sqrt=ops.sqrt)


def _chain(self, k: int):
    """A function applying k drawn elementwise steps."""
    table = _SMOOTH if self.mode == "smooth" else _ANY
    names = [self.choice(sorted(table)) for _ in range(k)]

    def f(x):
        for n in names:
            x = table[n](x)
        return x
    return f


def move_cond(self):
    """cond (or switch) on a scalar decision drawn from a pool value, branches closing over another value."""
    v = self.floating()
    f_true, f_false = _chain(self, self.integer(1, 2)), _chain(self, self.integer(1, 2))
    other = self.pick(lambda w: w.is_float and w.dtype == v.dtype and G._bshape_ok(w.shape, v.shape) == v.shape)
    use_switch = self.choice(["cond", "cond", "switch"]) == "switch"

    def run(x, *cap):
        c = cap[0] if cap else None
        t = (lambda x: f_true(x) * c) if c is not None else f_true
        if use_switch:
            idx = ops.astype(ops.floor(ops.clip(ops.sum(x), -1.0, 3.0)), "int32")
            return gd.switch(idx, [t, f_false, lambda x: x * 2.0], x)
        return gd.cond(ops.sum(x) > 0.0, t, f_false, x)
    vals = [v] + ([other] if other is not None else [])
    return self.user_op(run, *vals)


def move_scan(self):
    """scan over the leading axis of a value (or fori_loop with int bounds), carry of its slice's shape."""
    xs = self.pick(lambda w: w.is_float and 1 <= w.ndim and 1 <= w.shape[0] <= 4)
    if xs is None:
        xs = self.new_input((self.integer(1, 4),) + self.shape(0, 2), self.choice(
            [d for d in self.dtypes if d in G.ANY_FLOAT] or ["float64"]))
    fa, fb, fc = (_chain(self, self.integer(1, 2)) for _ in range(3))
    reverse = self.maybe(30)
    as_fori = self.maybe(25)

    def run(x):
        init = ops.sum(x, 0) * 0.5
        if as_fori:
            return gd.fori_loop(0, int(x.shape[0]), lambda i, c: fa(c) + x[0] * 0.5, init)
        c, ys = gd.scan(lambda c, s: (fa(c) * 0.5 + fb(s), fc(c) * s), init, x, reverse=reverse)
        return ys + c
    return self.user_op(run, xs)


def move_while(self):
    """while_loop with an int counter and (sometimes) a data-dependent condition; max_steps bounds it."""
    v = self.floating()
    n = self.integer(0, 4)
    data_stop = self.maybe(40)
    f = _chain(self, self.integer(1, 2))

    def run(x):
        def cond(c):
            go = c[1] < n
            if data_stop:
                go = ops.logical_and(go, ops.sum(c[0] * c[0]) < 50.0)
            return go

        def body(c):
            return f(c[0]) * 0.9 + x * 0.1, c[1] + 1
        out, _ = gd.while_loop(cond, body, (x, ops.zeros((), dtype="int32")), max_steps=n + 1)
        return out
    return self.user_op(run, v)


def move_checkpoint(self):
    """A drawn chain under gd.checkpoint."""
    v = self.floating()
    return self.user_op(gd.checkpoint(_chain(self, self.integer(1, 3))), v)


@gd.custom_jvp
def _xsin(x):
    return ops.sin(x) * x


@_xsin.defjvp
def _xsin_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _xsin(x), (ops.cos(x) * x + ops.sin(x)) * t


@gd.custom_vjp
def _tanh_scaled(x, y):
    return ops.tanh(x) * y


def _tanh_scaled_fwd(x, y):
    return _tanh_scaled(x, y), (x, y)


def _tanh_scaled_bwd(res, ct):
    x, y = res
    th = ops.tanh(x)
    return ct * (1.0 - th * th) * y, ct * th


_tanh_scaled.defvjp(_tanh_scaled_fwd, _tanh_scaled_bwd)


def move_custom(self):
    """A custom_jvp or custom_vjp function (the rules are the true derivatives)."""
    v = self.floating()
    if self.choice(["custom_jvp_call", "custom_vjp_call"]) == "custom_jvp_call":
        return self.user_op(_xsin, v)
    w = self.partner(v)
    w = w if w.is_float else self.cast(w, v.dtype)
    return self.user_op(lambda a, b: _tanh_scaled(a, ops.broadcast_to(b, tuple(a.shape))
                                                  if tuple(b.shape) != tuple(a.shape) else b), v, w)


_MOVES = {"cond": move_cond, "scan": move_scan, "while": move_while, "checkpoint": move_checkpoint,
          "custom": move_custom}


def register() -> None:
    """Add the moves to the generator (once)."""
    if getattr(G._Gen, "_control_moves", False):
        return
    for name, fn in _MOVES.items():
        setattr(G._Gen, f"move_{name}", fn)
    G._Gen.MOVE_OF.update({"cond": "cond", "scan": "scan", "while_loop": "while", "checkpoint": "checkpoint",
                           "custom_jvp_call": "custom", "custom_vjp_call": "custom"})
    G._Gen.MOVES = G._Gen.MOVES + list(_MOVES)
    G._Gen.WEIGHTED = G._Gen.WEIGHTED + list(_MOVES)
    G._Gen._control_moves = True


register()
