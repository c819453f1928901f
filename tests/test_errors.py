"""Every user-error path of the dense API has a clear message (what was received, what to pass).

Covers ``_validation.py`` (types, shapes, values, ``k``, the ``A``/``B``
pair), ``_api.py`` (solver, ``largest``, ``backward``), ``_options.py``
(``BackwardOptions``) and ``eigensolvers/_reduce.py`` (``B`` not positive
definite), for ``eigrad.eigh`` and both dense solvers of ``eigrad.eigsh``.
"""

from __future__ import annotations

import math

import pytest
import torch

import eigrad
from eigrad.eigensolvers import LapackSubset
from eigrad.testing import planted, random_spd

N = 6
A = planted([0.5 + i for i in range(N)], seed=0).A
B = random_spd(N, seed=1)

# every way to call the dense API on (A, B); errors must come out of each
CALLS = {
    "eigh": lambda A, B=None, **kw: eigrad.eigh(A, B, **kw),
    "eigsh-lapack": lambda A, B=None, **kw: eigrad.eigsh(A, 2, B=B, solver="lapack", **kw),
    "eigsh-dense": lambda A, B=None, **kw: eigrad.eigsh(A, 2, B=B, solver="dense", **kw),
}
ALL = pytest.mark.parametrize("call", list(CALLS))


# --- A: type, dtype, rank, shape ------------------------------------------------------------------
def test_eigh_rejects_non_tensors():
    with pytest.raises(TypeError, match=r"A must be a torch.Tensor .* received list.*torch.as_tensor"):
        eigrad.eigh([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(TypeError, match=r"B must be a torch.Tensor .* received ndarray"):
        eigrad.eigh(A, B.numpy())


@ALL
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_dtype_is_a_type_error(call, dtype):
    with pytest.raises(TypeError, match=rf"A has dtype {dtype}; pass a floating-point tensor"):
        CALLS[call](torch.eye(N, dtype=dtype))


@ALL
def test_half_precision_is_a_type_error(call):
    with pytest.raises(TypeError, match=r"float16.*supports float32 and float64"):
        CALLS[call](A.half())


@ALL
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_precision_mismatch_is_a_type_error(call, dtype):
    """Complex Hermitian input is accepted (tests/test_complex_dense.py); a real matrix of the other
    precision is not promoted."""
    other = torch.float64 if dtype == torch.complex64 else torch.float32
    with pytest.raises(TypeError, match=rf"A has dtype {dtype} but B has dtype {other} \(a real matrix is promoted"):
        CALLS[call](A.to(dtype), B.to(other))


@ALL
def test_wrong_rank(call):
    with pytest.raises(ValueError, match=r"A must be a matrix of shape \(\.\.\., n, n\); received .* shape \(6,\)"):
        CALLS[call](A[0])
    with pytest.raises(ValueError, match=r"shape \(\)"):
        CALLS[call](torch.tensor(1.0, dtype=torch.float64))


@ALL
def test_non_square(call):
    with pytest.raises(ValueError, match=r"A must be square \(\.\.\., n, n\); received shape \(6, 5\)"):
        CALLS[call](A[:, :5])
    with pytest.raises(ValueError, match=r"A must be square .* \(2, 6, 5\)"):
        CALLS[call](torch.stack([A, A])[..., :5])
    with pytest.raises(ValueError, match=r"B must be square"):
        CALLS[call](A, B[:5])


def test_empty_matrix():
    # eigh / eigsh return empty results for n = 0 (as torch; tests/test_eigh_parity.py); the spectral
    # functions do not take empty matrices
    with pytest.raises(ValueError, match=r"A is empty \(shape \(0, 0\)\); pass a matrix with n >= 1"):
        eigrad.sqrtm(torch.zeros(0, 0, dtype=torch.float64))


@pytest.mark.parametrize("UPLO", ["X", "lower", 1])
def test_bad_uplo(UPLO):
    with pytest.raises(ValueError, match=r"UPLO must be 'L' .*, 'U' .* or None .*; received"):
        eigrad.eigh(A, UPLO=UPLO)


@pytest.mark.parametrize("kind", ["torch-sparse", "operator", "scipy"])
def test_eigh_with_sparse_B_says_eigsh(kind):
    import scipy.sparse

    Bs = {"torch-sparse": lambda: B.to_sparse(), "operator": lambda: eigrad.as_operator(B),
          "scipy": lambda: scipy.sparse.csr_matrix(B.numpy())}[kind]()
    with pytest.raises(TypeError, match=r"B is a .*; eigrad.eigh takes dense tensors. For a sparse or matrix-free "
                                        r"B call eigrad.eigsh\(A, k, B=B\)"):
        eigrad.eigh(A, Bs)
    with pytest.raises(TypeError, match=r"A is a tensor with layout torch.sparse_coo; eigrad.eigh takes dense"):
        eigrad.eigh(A.to_sparse())


# --- A and B: values ----------------------------------------------------------------------------------
@ALL
def test_non_symmetric(call):
    bad = A.clone()
    bad[0, 1] += 1e-3
    msg = r"A is not symmetric: max \|A - Aᵀ\| = 1\.000e-03 exceeds .*\(A \+ A\.mT\) / 2"
    with pytest.raises(ValueError, match=msg):
        CALLS[call](bad)
    badB = B.clone()
    badB[2, 0] -= 1e-2
    with pytest.raises(ValueError, match=r"B is not symmetric"):
        CALLS[call](A, badB)


@ALL
def test_rounding_level_asymmetry_is_accepted(call):
    """Asymmetry at the level of a few ulps (e.g. from Q Λ Qᵀ) is rounding, not an error."""
    nearly = A.clone()
    nearly[0, 1] += 4 * torch.finfo(A.dtype).eps * float(A.abs().max())
    L = CALLS[call](nearly).eigenvalues
    assert torch.isfinite(L).all()


@ALL
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite(call, value):
    bad = A.clone()
    bad[1, 1] = value
    with pytest.raises(ValueError, match=r"A contains NaN or inf; pass a finite matrix"):
        CALLS[call](bad)
    badB = B.clone()
    badB[3, 3] = value
    with pytest.raises(ValueError, match=r"B contains NaN or inf"):
        CALLS[call](A, badB)


@ALL
@pytest.mark.parametrize("kind", ["indefinite", "singular", "negative"])
def test_B_not_positive_definite_says_B(call, kind):
    if kind == "indefinite":
        badB = B - 1.5 * float(torch.linalg.eigvalsh(B)[0]) * torch.eye(N, dtype=B.dtype)
    elif kind == "singular":
        v = torch.ones(N, 1, dtype=B.dtype) / N**0.5
        badB = B - (B @ v @ v.T @ B) / float(v.T @ B @ v)  # B with v in its null space
        badB = 0.5 * (badB + badB.T)
        badB[0, 0] -= 1e-3  # and slightly indefinite, so rounding cannot make it pass
    else:
        badB = -B
    with pytest.raises(ValueError, match=r"B is not symmetric positive definite: its Cholesky factorization failed"):
        CALLS[call](A, badB)


# --- the A/B pair ------------------------------------------------------------------------------------
@ALL
def test_pair_size_mismatch(call):
    with pytest.raises(ValueError, match=r"B has shape \(5, 5\) but A has shape \(6, 6\); .* same n = 6"):
        CALLS[call](A, B[:5, :5])


@ALL
def test_pair_batch_mismatch(call):
    As = torch.stack([A, A])
    Bs = torch.stack([B, B, B])
    with pytest.raises(ValueError, match=r"batch shapes of A \(2,\) and B \(3,\) do not broadcast"):
        CALLS[call](As, Bs)


@ALL
def test_pair_batch_broadcasts(call):
    """The valid counterpart: one B for the whole batch."""
    L = CALLS[call](torch.stack([A, A]), B).eigenvalues
    torch.testing.assert_close(L[0], L[1])


@ALL
def test_pair_dtype_mismatch(call):
    with pytest.raises(TypeError, match=r"A has dtype torch.float64 but B has dtype torch.float32; .*B.to\(A.dtype\)"):
        CALLS[call](A, B.float())


@ALL
def test_pair_device_mismatch(call):
    with pytest.raises(ValueError, match=r"A is on cpu but B is on meta; move them to one device"):
        CALLS[call](A, B.to("meta"))


# --- k -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["lapack", "dense", "auto"])
@pytest.mark.parametrize("k", [-1, N + 1])
def test_k_out_of_range(solver, k):
    with pytest.raises(ValueError, match=rf"k={k} is out of range for a matrix of size n={N}; pass 0 <= k <= {N}"):
        eigrad.eigsh(A, k, solver=solver)


@pytest.mark.parametrize("k", [2.0, "2", None, True], ids=["float", "str", "None", "bool"])
def test_k_wrong_type(k):
    with pytest.raises(TypeError, match=r"k must be an integer \(int, numpy integer or 0-d integer tensor\); "
                                        r"received .*Pass int\(k\)"):
        eigrad.eigsh(A, k)


def test_k_integer_tensor_is_accepted():
    L = eigrad.eigsh(A, torch.tensor(2)).eigenvalues
    assert L.shape == (2,)
    with pytest.raises(TypeError, match=r"k must be an integer .*received a tensor of shape \(\) and dtype torch.float32"):
        eigrad.eigsh(A, torch.tensor(2.0))
    with pytest.raises(TypeError, match=r"received a tensor of shape \(1,\) and dtype torch.int64"):
        eigrad.eigsh(A, torch.tensor([2]))
    with pytest.raises(TypeError, match=r"received a tensor of shape \(\) and dtype torch.bool"):
        eigrad.eigsh(A, torch.tensor(True))


# --- the other arguments ---------------------------------------------------------------------------------
def test_bad_solver_name():
    msg = r"solver='lapak' is not a dense eigensolver; pass one of 'auto', 'dense', 'lapack'"
    with pytest.raises(ValueError, match=msg):
        eigrad.eigsh(A, 2, solver="lapak")


def test_bad_solver_type():
    with pytest.raises(TypeError, match=r"solver must be a name or an eigrad eigensolver; received int"):
        eigrad.eigsh(A, 2, solver=3)


def test_solver_instance_is_accepted():
    L1 = eigrad.eigsh(A, 2, solver=LapackSubset()).eigenvalues
    L2 = eigrad.eigsh(A, 2, solver="dense").eigenvalues
    torch.testing.assert_close(L1, L2)


def test_lapack_solver_needs_the_cpu():
    with pytest.raises(ValueError, match=r"solver='lapack' runs on the CPU; received A on meta.*solver='dense'"):
        LapackSubset()(A.to("meta"), 2)


@pytest.mark.parametrize("largest", [1, "yes", None])
def test_largest_must_be_bool(largest):
    with pytest.raises(TypeError, match=r"largest must be a bool, received"):
        eigrad.eigsh(A, 2, largest=largest)


@pytest.mark.parametrize("fn", ["eigh", "eigsh"])
def test_backward_must_be_options(fn):
    bad = {"gauge": "raise"}
    with pytest.raises(TypeError, match=r"backward must be an eigrad.BackwardOptions or None; received dict"):
        eigrad.eigh(A, backward=bad) if fn == "eigh" else eigrad.eigsh(A, 2, backward=bad)


# --- BackwardOptions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gauge": "loud"}, r"BackwardOptions\(gauge='loud'\) is not a policy; pass one of 'warn', 'raise', 'ignore'"),
        ({"gauge": None}, r"gauge=None\) is not a policy"),
        ({"degen_atol": -1.0}, r"degen_atol=-1.0\) must be a finite non-negative float or None"),
        ({"degen_rtol": math.nan}, r"degen_rtol=nan\) must be a finite non-negative"),
        ({"check_rtol": math.inf}, r"check_rtol=inf\) must be a finite non-negative"),
        ({"linsolve_rtol": "1e-8"}, r"linsolve_rtol='1e-8'\) must be a finite non-negative"),
        ({"n_guard": -1}, r"n_guard=-1\) must be an int >= 0"),
        ({"n_guard": 1.5}, r"n_guard=1.5\) must be an int >= 0"),
        ({"linsolve_maxiter": 0}, r"linsolve_maxiter=0\) must be a positive int or None"),
        ({"linsolve_maxiter": 10.0}, r"linsolve_maxiter=10.0\) must be a positive int or None"),
    ],
)
def test_backward_options_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eigrad.BackwardOptions(**kwargs)


def test_backward_options_are_frozen_and_have_no_catch_all():
    opts = eigrad.BackwardOptions()
    with pytest.raises(AttributeError):
        opts.gauge = "raise"  # frozen dataclass
    with pytest.raises(TypeError, match="guage"):
        eigrad.BackwardOptions(guage="raise")  # a typo is an error, not swallowed
