"""Problem generators and finite-difference helpers for testing eigrad and code built on it.

Every generator takes a ``seed`` (an ``int`` or a ``torch.Generator``) and never
touches the global random state. Problems have a *planted* spectrum, known
exactly, so tests can place exact or near-degenerate clusters where they want:

* standard: ``A = Q diag(λ) Qᵀ`` with ``Q`` Haar-random orthogonal;
* generalized: ``B = Lc Lcᵀ`` random symmetric positive definite and
  ``A = Lc Q diag(λ) Qᵀ Lcᵀ``, so that ``A x = λ B x`` has eigenvalues ``λ``
  and B-orthonormal eigenvectors ``X = Lc⁻ᵀ Q`` (``Xᵀ B X = I``).

Example
-------
>>> from eigrad.testing import planted, clustered_spectrum
>>> p = planted(clustered_spectrum(20, [1, 2, 3]), B="random", seed=0)
>>> p.A.shape, p.B.shape, p.eigenvalues[:6]       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

__all__ = [
    "PlantedProblem",
    "as_generator",
    "central_difference",
    "cluster_direction",
    "cluster_positions",
    "clustered_spectrum",
    "invariant_loss",
    "planted",
    "random_hermitian",
    "random_orthogonal",
    "random_spd",
    "random_symmetric",
    "random_unitary",
]

def as_generator(seed: int | torch.Generator = 0) -> torch.Generator:
    """A CPU ``torch.Generator``: ``seed`` itself, or a new one seeded with the int."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator; received {type(seed).__name__}.")
    return torch.Generator().manual_seed(seed)


def _randn(shape, gen, dtype, device):
    # draw on the CPU with the seeded generator (reproducible across devices), then move
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


def random_orthogonal(
    n: int, *, seed: int | torch.Generator = 0, batch_shape: Sequence[int] = (), dtype=torch.float64, device="cpu"
) -> torch.Tensor:
    """Haar-random orthogonal ``Q`` (*batch_shape, n, n) (QR of a Gaussian, signs fixed)."""
    gen = as_generator(seed)
    G = _randn((*batch_shape, n, n), gen, torch.float64, "cpu")
    Q, R = torch.linalg.qr(G)
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
    return Q.to(dtype=dtype, device=device)


def random_unitary(
    n: int, *, seed: int | torch.Generator = 0, batch_shape: Sequence[int] = (), dtype=torch.complex128, device="cpu"
) -> torch.Tensor:
    """Haar-random unitary ``Q`` (*batch_shape, n, n): QR of a complex Gaussian (drawn in ``dtype``), phases of R's diagonal fixed."""
    gen = as_generator(seed)
    G = torch.randn(*batch_shape, n, n, dtype=dtype, generator=gen)
    Q, R = torch.linalg.qr(G)
    d = torch.diagonal(R, dim1=-2, dim2=-1)
    return (Q * (d / d.abs()).unsqueeze(-2)).to(device)


def random_hermitian(
    n: int, *, seed: int | torch.Generator = 0, batch_shape: Sequence[int] = (), dtype=torch.complex128, device="cpu"
) -> torch.Tensor:
    """Hermitian Gaussian ``(G + Gᴴ)/2`` (*batch_shape, n, n), ``G`` complex Gaussian drawn in ``dtype``."""
    gen = as_generator(seed)
    G = torch.randn(*batch_shape, n, n, dtype=dtype, generator=gen)
    return (0.5 * (G + G.mH)).to(device)


def random_symmetric(
    n: int, *, seed: int | torch.Generator = 0, batch_shape: Sequence[int] = (), dtype=torch.float64, device="cpu"
) -> torch.Tensor:
    """Symmetric Gaussian ``(G + Gᵀ)/2`` (*batch_shape, n, n) with unit-variance off-diagonal entries / √2."""
    gen = as_generator(seed)
    G = _randn((*batch_shape, n, n), gen, torch.float64, "cpu")
    return (0.5 * (G + G.transpose(-1, -2))).to(dtype=dtype, device=device)


def random_spd(
    n: int,
    *,
    seed: int | torch.Generator = 0,
    cond: float = 10.0,
    batch_shape: Sequence[int] = (),
    dtype=torch.float64,
    device="cpu",
) -> torch.Tensor:
    """Random symmetric positive definite ``B`` (*batch_shape, n, n) with condition number ``cond``.

    Eigenvalues log-uniform in ``[1, cond]`` (both ends included) in random
    orthogonal directions, so the spectrum of ``B`` is controlled exactly.
    """
    if not cond >= 1.0:
        raise ValueError(f"cond must be >= 1; received {cond!r}.")
    gen = as_generator(seed)
    Q = random_orthogonal(n, seed=gen, batch_shape=batch_shape)
    t = torch.rand(*batch_shape, n, generator=gen, dtype=torch.float64)
    if n >= 2:
        t[..., 0], t[..., 1] = 0.0, 1.0
    w = torch.tensor(float(cond), dtype=torch.float64) ** t
    B = (Q * w.unsqueeze(-2)) @ Q.transpose(-1, -2)
    B = 0.5 * (B + B.transpose(-1, -2))
    return B.to(dtype=dtype, device=device)


def clustered_spectrum(
    n: int,
    cluster_sizes: Sequence[int],
    *,
    start: float = 1.0,
    spacing: float = 1.0,
    gaps: Sequence[float] | None = None,
) -> list[float]:
    """An ascending spectrum of length ``n`` with exact clusters at its bottom.

    ``cluster_sizes`` lists the sizes of the lowest clusters (e.g. ``[1, 2, 3]``:
    a simple eigenvalue, a double, a triple); the remaining eigenvalues are
    simple. Consecutive distinct levels differ by ``spacing`` (or by the
    entries of ``gaps``, one per step between levels).
    """
    sizes = list(cluster_sizes)
    if any((not isinstance(s, int)) or s < 1 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"cluster_sizes must be positive ints summing to at most n={n}; received {sizes}.")
    sizes += [1] * (n - sum(sizes))
    n_steps = len(sizes) - 1
    if gaps is None:
        gaps = [spacing] * n_steps
    elif len(gaps) < n_steps:
        gaps = list(gaps) + [spacing] * (n_steps - len(gaps))
    out, level = [], float(start)
    for i, s in enumerate(sizes):
        out += [level] * s
        if i < n_steps:
            level += float(gaps[i])
    return out


@dataclasses.dataclass(frozen=True)
class PlantedProblem:
    """A problem ``A X = B X Λ`` whose eigenpairs are known exactly.

    Attributes
    ----------
    A : Tensor (*batch, n, n)
    B : Tensor (*batch, n, n) or None
        ``None`` for the standard problem.
    eigenvalues : Tensor (*batch, n)
        Ascending.
    eigenvectors : Tensor (*batch, n, n)
        B-orthonormal (orthonormal when ``B`` is None), one basis of each
        eigenspace.
    """

    A: torch.Tensor
    B: torch.Tensor | None
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor

    @property
    def n(self) -> int:
        return self.A.shape[-1]

    def BX(self) -> torch.Tensor:
        """``B X`` (*batch, n, n)."""
        return self.eigenvectors if self.B is None else self.B @ self.eigenvectors


def planted(
    eigenvalues,
    *,
    B: None | str | torch.Tensor = None,
    seed: int | torch.Generator = 0,
    cond: float = 10.0,
    batch_shape: Sequence[int] = (),
    dtype=torch.float64,
    device="cpu",
) -> PlantedProblem:
    """A symmetric (generalized) eigenproblem with the spectrum ``eigenvalues``.

    Parameters
    ----------
    eigenvalues : sequence or Tensor (*batch, n)
        The planted spectrum (sorted ascending on return); repeated values
        give exactly degenerate clusters (to rounding of ``A``).
    B : None, "random" or Tensor (*batch, n, n)
        ``None``: the standard problem; ``"random"``: a :func:`random_spd`
        with condition number ``cond``; a tensor: that SPD matrix.
    seed : int or torch.Generator
        Source of the random eigenvectors (and of ``B``).
    batch_shape : sequence of int
        Leading batch dimensions (independent eigenvectors per element).

    Returns
    -------
    PlantedProblem
        ``A = Lc Q diag(λ) Qᵀ Lcᵀ`` (``Lc`` the Cholesky factor of ``B``),
        eigenvectors ``X = Lc⁻ᵀ Q``; with ``B = None``, ``A = Q diag(λ) Qᵀ``.
    """
    gen = as_generator(seed)
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64).cpu()
    lam, _ = torch.sort(lam, dim=-1)
    n = lam.shape[-1]
    batch_shape = tuple(torch.broadcast_shapes(tuple(batch_shape), tuple(lam.shape[:-1])))
    lam = lam.expand(*batch_shape, n).clone()
    Q = random_orthogonal(n, seed=gen, batch_shape=batch_shape)
    C = (Q * lam.unsqueeze(-2)) @ Q.transpose(-1, -2)
    C = 0.5 * (C + C.transpose(-1, -2))
    if B is None:
        A, Bm, X = C, None, Q
    else:
        if isinstance(B, str):
            if B != "random":
                raise ValueError(f"B must be None, 'random' or a tensor; received {B!r}.")
            Bm = random_spd(n, seed=gen, cond=cond, batch_shape=batch_shape)
        else:
            Bm = B.detach().to(dtype=torch.float64, device="cpu")
            Bm = Bm.expand(*batch_shape, n, n).clone() if Bm.dim() == 2 and batch_shape else Bm
        Lc = torch.linalg.cholesky(Bm)
        A = Lc @ C @ Lc.transpose(-1, -2)
        A = 0.5 * (A + A.transpose(-1, -2))
        X = torch.linalg.solve_triangular(Lc.transpose(-1, -2), Q, upper=True)
    cast = lambda t: None if t is None else t.to(dtype=dtype, device=device)  # noqa: E731
    return PlantedProblem(cast(A), cast(Bm), cast(lam), cast(X))


def cluster_direction(
    problem: PlantedProblem,
    positions: Sequence[int],
    *,
    seed: int | torch.Generator = 0,
) -> torch.Tensor:
    """A symmetric perturbation ``E = B X_g S X_gᵀ B`` that splits the cluster at ``positions``.

    ``S`` is random symmetric. As a perturbation of ``A``, ``A + tE`` splits
    ``λ_g`` into the eigenvalues of ``λ + tS`` to first order; as a
    perturbation of ``B``, into those of ``λ (1 - tS)``. Eigenpairs outside
    ``g`` move only to second order.
    """
    pos = list(positions)
    BXg = problem.BX()[..., pos]  # (*batch, n, g)
    S = random_symmetric(len(pos), seed=seed, batch_shape=BXg.shape[:-2], dtype=BXg.dtype, device=BXg.device)
    E = BXg @ S @ BXg.transpose(-1, -2)
    return 0.5 * (E + E.transpose(-1, -2))


def central_difference(
    f: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    directions: Sequence[torch.Tensor | None],
    h: float = 1e-5,
    order: int = 4,
) -> torch.Tensor:
    """Directional derivative ``d/dt f(x + t v)`` at ``t = 0`` by central differences.

    ``inputs`` and ``directions`` pair up (``None``: that input is not
    moved). ``order=2``: ``(f(h) - f(-h)) / 2h``, error ``O(h²)``;
    ``order=4``: the five-point stencil, error ``O(h⁴)``. Evaluated without
    autograd; returns the derivative of every output entry.
    """

    def at(t):
        args = [x if v is None else x + t * v for x, v in zip(inputs, directions)]
        with torch.no_grad():
            return f(*args)

    if order == 2:
        return (at(h) - at(-h)) / (2 * h)
    if order == 4:
        return (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
    raise ValueError(f"order must be 2 or 4; received {order!r}.")


def cluster_positions(eigenvalues, tol: float = 1e-9) -> list[list[int]]:
    """Positions of the clusters of an ascending 1-D spectrum (gaps ``<= tol·max(1, |λ|)`` join)."""
    vals = [float(v) for v in torch.as_tensor(eigenvalues).reshape(-1)]
    out: list[list[int]] = []
    for i, v in enumerate(vals):
        if out and abs(v - vals[i - 1]) <= tol * max(1.0, abs(v)):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def invariant_loss(
    eigenvalues: torch.Tensor,
    eigenvectors: torch.Tensor,
    clusters: Sequence[Sequence[int]],
    W: torch.Tensor,
) -> torch.Tensor:
    """A loss whose derivative exists at every cluster in ``clusters`` (MATH.md's two conditions).

    ``Σ_i (λ_i² + sin λ_i) + Σ_g c_g <W, X_g X_gᵀ>`` with ``c_g = 1/(1+g)``:
    a symmetric function of the eigenvalues (uniform cotangent on each
    cluster) plus the cluster projectors (basis invariant). ``clusters``
    lists column positions of ``eigenvectors`` (*batch, n, k) that form whole
    clusters; ``W`` (n, n) or (*batch, n, n). Summed over batch dimensions.
    """
    L, X = eigenvalues, eigenvectors
    loss = (L**2 + torch.sin(L)).sum()
    for g, pos in enumerate(clusters):
        Xg = X[..., list(pos)]
        # weight W, not the 0-dim sum: torch.func.jvp promotes the tangent of a 0-dim tensor times
        # a Python float to float64 (PyTorch 2.13), which would break float32 checks
        loss = loss + ((W / (1.0 + g)) * (Xg @ Xg.transpose(-1, -2))).sum()
    return loss
