"""``ModuleOperator``: an ``nn.Module`` whose ``forward(X)`` returns ``A X``.

The module's parameters are the operator's tensors; rebuilt operators call
the module through ``torch.func.functional_call`` with substituted
parameters, so the module itself is never mutated and gradients reach its
parameters by one VJP of the product (MATH.md, "Reverse mode").
"""

from __future__ import annotations

import torch

from ._base import LinearOperator, OperatorSpec
from ._function import _check_shape, _dtype_device, check_product, func_jvp, func_vjp


class ModuleOperator(LinearOperator):
    """A symmetric operator given by an ``nn.Module``: ``A X = module(X)``.

    Parameters
    ----------
    module : torch.nn.Module
        ``module(X)`` returns ``A X`` for ``X`` of shape ``(n, m)``; linear
        in ``X`` and symmetric. Its parameters (``module.named_parameters()``)
        receive gradients; buffers are constants.
    shape : int or tuple
        ``n``, ``(n, n)`` or ``(*batch, n, n)``.
    dtype, device : optional
        Default: those of the module's first floating-point parameter
        (``dtype=`` is required for a module without one).
    """

    def __init__(self, module: torch.nn.Module, shape=None, *, dtype=None, device=None):
        if not isinstance(module, torch.nn.Module):
            raise TypeError(
                f"ModuleOperator takes a torch.nn.Module; received {type(module).__name__}. "
                "For a plain function use eigrad.FunctionOperator(matmat, params, shape)."
            )
        if shape is None:
            raise TypeError("ModuleOperator needs shape=(n, n): the operator's size cannot be inferred.")
        named = list(module.named_parameters())
        self._init(module, tuple(n for n, _ in named), tuple(p for _, p in named), _check_shape(shape), dtype, device)
        self._bound = False

    def _init(self, module, names, params, shape, dtype, device):
        self.module = module
        self.names = names
        self.params = params
        self.shape = shape
        self.dtype, self.device = _dtype_device(params, dtype, device, "ModuleOperator")

    @classmethod
    def _with_params(cls, module, names, params, shape, dtype, device) -> "ModuleOperator":
        op = cls.__new__(cls)
        op._init(module, names, tuple(params), shape, dtype, device)
        op._bound = True
        return op

    def _call(self, X, params):
        return torch.func.functional_call(self.module, dict(zip(self.names, params)), (X,))

    def matmat(self, X):
        AX = self.module(X) if not self._bound else self._call(X, self.params)
        return check_product(AX, X, self, "ModuleOperator's module")

    def flatten(self):
        module, names, shape, dtype, device = self.module, self.names, self.shape, self.dtype, self.device
        return self.params, OperatorSpec(
            lambda ts: ModuleOperator._with_params(module, names, ts, shape, dtype, device)
        )

    def bilinear_vjp(self, L, R):
        # θ̄ = ∂/∂θ <L, A(θ) R> (MATH.md, "Reverse mode"): one VJP through functional_call
        return func_vjp(lambda *ps: self._call(R, ps), self.params, L)

    def tangent_matmat(self, dtensors, X):
        # A' X as one JVP of θ ↦ A(θ) X (MATH.md, "Forward mode")
        return func_jvp(lambda *ps: self._call(X, ps), self.params, dtensors, X)
