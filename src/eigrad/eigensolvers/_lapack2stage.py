"""ctypes bindings to LAPACK's two-stage reduction in scipy's bundled OpenBLAS.

``dsytrd_sy2sb`` reduces a real symmetric ``C`` to a band matrix
``Bb = Q1ᵀ C Q1`` of bandwidth ``kd`` (BLAS-3); ``dsytrd_sb2st`` reduces the
band matrix to tridiagonal form (values only: ``VECT='N'``). scipy does not
wrap either routine, but its OpenBLAS exports them (``scipy_dsytrd_sy2sb_``);
the library is located through the scipy.linalg extension that links it.
float64 only (other dtypes use the one-stage ``sytrd``).
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

_LIB = None


def _lib():
    global _LIB
    if _LIB is None:
        import scipy

        root = os.path.dirname(scipy.__file__)
        cands = sorted(glob.glob(os.path.join(root, "..", "scipy.libs", "libscipy_openblas*.so*")))
        cands += sorted(glob.glob(os.path.join(root, ".dylibs", "libscipy_openblas*")))
        _LIB = False
        for path in cands:
            try:
                lib = ctypes.CDLL(path)
                getattr(lib, "scipy_dsytrd_sy2sb_")
                _LIB = (lib, "scipy_")
                break
            except (OSError, AttributeError):
                continue
    return _LIB


def available() -> bool:
    """Whether the two-stage routines were found in scipy's OpenBLAS."""
    return bool(_lib())


_I = ctypes.c_int
_P = ctypes.c_void_p


def _fn(name):
    lib, prefix = _lib()
    return getattr(lib, prefix + name + "_")


def _ip(x):
    return ctypes.byref(_I(x))


def _ch(c):
    return ctypes.c_char_p(c.encode())


def sy2sb(C: np.ndarray, kd: int):
    """``(refl, AB, tau)`` of ``dsytrd_sy2sb(lower)`` on symmetric float64 ``C`` (n, n).

    ``refl`` (n, n, Fortran order) holds ``Q1 = diag(I_kd, Q')`` with ``Q'`` in ``geqrf`` layout in
    ``refl[kd:, :n-kd]`` and ``tau`` (n-kd,); ``AB`` (kd+1, n) the lower band: ``AB[i-j, j] = Bb[i, j]``.
    """
    if not available():
        raise RuntimeError("dsytrd_sy2sb was not found in scipy's OpenBLAS; pass reduction='one-stage'.")
    n = C.shape[0]
    A = np.array(C, dtype=np.float64, order="F", copy=True)
    AB = np.zeros((kd + 1, n), dtype=np.float64, order="F")
    tau = np.zeros(max(n - kd, 1), dtype=np.float64)
    info = _I(0)
    f = _fn("dsytrd_sy2sb")
    wq = np.zeros(1)
    args = lambda work, lwork: (_ch("L"), _ip(n), _ip(kd), A.ctypes.data_as(_P), _ip(n),  # noqa: E731
                                AB.ctypes.data_as(_P), _ip(kd + 1), tau.ctypes.data_as(_P),
                                work.ctypes.data_as(_P), _ip(lwork), ctypes.byref(info), ctypes.c_size_t(1))
    f(*args(wq, -1))
    work = np.zeros(max(int(wq[0]), 1))
    f(*args(work, work.size))
    if info.value != 0:
        raise RuntimeError(f"LAPACK dsytrd_sy2sb failed with info={info.value}")
    return A, AB, tau[: max(n - kd, 0)]


def sb2st(AB: np.ndarray):
    """``(d, e)`` of ``dsytrd_sb2st(VECT='N', lower)`` on the lower band ``AB`` (kd+1, n) (not modified)."""
    kd = AB.shape[0] - 1
    n = AB.shape[1]
    ab = np.array(AB, dtype=np.float64, order="F", copy=True)
    d = np.zeros(n)
    e = np.zeros(max(n - 1, 1))
    info = _I(0)
    f = _fn("dsytrd_sb2st")
    hq, wq = np.zeros(1), np.zeros(1)
    args = lambda hous, lh, work, lw: (_ch("N"), _ch("N"), _ch("L"), _ip(n), _ip(kd),  # noqa: E731
                                       ab.ctypes.data_as(_P), _ip(kd + 1), d.ctypes.data_as(_P),
                                       e.ctypes.data_as(_P), hous.ctypes.data_as(_P), _ip(lh),
                                       work.ctypes.data_as(_P), _ip(lw), ctypes.byref(info),
                                       ctypes.c_size_t(1), ctypes.c_size_t(1), ctypes.c_size_t(1))
    f(*args(hq, -1, wq, -1))
    hous, work = np.zeros(max(int(hq[0]), 1)), np.zeros(max(int(wq[0]), 1))
    f(*args(hous, hous.size, work, work.size))
    if info.value != 0:
        raise RuntimeError(f"LAPACK dsytrd_sb2st failed with info={info.value}")
    return d, e[: n - 1]
