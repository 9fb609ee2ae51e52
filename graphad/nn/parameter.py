"""Parameter and ParameterTuple (defined in graphad/parameter.py, beside Tensor, so that the
transformations below nn can recognise them; this module is their place in the nn namespace)."""
from ..parameter import Parameter, ParameterTuple  # noqa: F401
