"""The seed tutorials' `forecast`: a dense layer followed by tanh (R^16 -> R^16 for D = 16).

Used by the CLI transcripts of docs/cli.md:
    graphad trace examples/forecast.py:forecast --args 'f32[16,16] f32[16] f32[16]'
    graphad trace examples/forecast.py:forecast --args 'f32[16,16] f32[16] f32[16]' --transform jacrev:2
"""
from graphad import ops


def forecast(weight, bias, x):
    return ops.dense(x, weight, bias).tanh()
