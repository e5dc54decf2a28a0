r"""Functions of the ensemble-space Gram matrix with a derivative that survives repeated eigenvalues.

The Kalman and transform updates apply scalar functions of a symmetric positive semi-definite
Gram matrix ``G`` (``SSᵀ`` or ``SᵀS``) through one eigen-decomposition ``G = V Λ Vᵀ``:
``f(G) B = V f(Λ) Vᵀ B``. Differentiating through ``eigh`` is ill-posed when eigenvalues repeat,
which is the rule here, not the exception: every missing observation, and every padded local
observation of the LETKF, adds a zero row and column to ``G``; JAX's ``eigh`` derivative then
divides by ``λ_i - λ_j = 0`` and the gradient of the whole filter becomes ``NaN``.

The matrix function itself is smooth. Its derivative is given by the Daleckii–Krein formula

.. math:: \mathrm{D}f(G)[\mathrm{d}G] = V\,\big(F ∘ (Vᵀ\,\mathrm{d}G\,V)\big)\,Vᵀ,\qquad
    F_{ij} = \frac{f(λ_i) - f(λ_j)}{λ_i - λ_j}\ (λ_i ≠ λ_j),\quad F_{ij} = f'(λ_i)\ (λ_i = λ_j),

(Higham 2008, *Functions of Matrices*, thm. 3.11), which :func:`gram_functions` uses as its
custom JVP: the forward pass is the plain eigen-decomposition (no extra cost), and first
derivatives are finite and exact for any multiplicity (second derivatives, e.g. ``jax.hessian``,
differentiate the rule's own ``eigh``: exact where the eigenvalues are distinct).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _inverse_1p(lam):
    return 1.0 / (1.0 + lam)


def _inverse_sqrt_1p(lam):
    return jax.lax.rsqrt(1.0 + lam)


def _sqrt_correction(lam):
    # ((1+λ)^{-1/2} - 1)/λ, written without the division (finite at λ = 0)
    r = jnp.sqrt(1.0 + lam)
    return -1.0 / (r * (1.0 + r))


def _d_inverse_1p(lam):
    return -1.0 / (1.0 + lam) ** 2


def _d_inverse_sqrt_1p(lam):
    return -0.5 * (1.0 + lam) ** -1.5


def _d_sqrt_correction(lam):
    r = jnp.sqrt(1.0 + lam)
    return (1.0 + 2.0 * r) / (2.0 * r * (r * (1.0 + r)) ** 2)


_FUNCTIONS = {
    "inverse_1p": (_inverse_1p, _d_inverse_1p),  # (I + G)^{-1}
    "inverse_sqrt_1p": (_inverse_sqrt_1p, _d_inverse_sqrt_1p),  # (I + G)^{-1/2}
    "sqrt_correction": (_sqrt_correction, _d_sqrt_correction),  # ((I+G)^{-1/2} - I) G^{-1}
}


def _apply(V, fl, B):
    VtB = V.T @ B
    return V @ (fl[:, None] * VtB if B.ndim == 2 else fl * VtB)


def _eigen(G):
    lam, V = jnp.linalg.eigh(G)
    return jnp.maximum(lam, 0.0), V


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def gram_functions(
    G: Float[Array, "k k"], Bs: tuple[Array, ...], kinds: tuple[str, ...]
) -> tuple[Array, ...]:
    r"""``f(G) B`` for each pair of ``Bs`` (vectors or matrices) and ``kinds``, from one
    eigen-decomposition of the symmetric positive semi-definite ``G``.

    ``kinds`` name the functions ``"inverse_1p"`` (``(I+G)^{-1}``), ``"inverse_sqrt_1p"``
    (``(I+G)^{-1/2}``) and ``"sqrt_correction"`` (``((I+G)^{-1/2} - I)G^{-1}``, finite on the
    null space of ``G``). The derivative is the Daleckii–Krein formula (module docstring).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> G = jnp.diag(jnp.array([0.0, 0.0, 3.0]))      # a repeated eigenvalue
        >>> (z,) = gram_functions(G, (jnp.ones(3),), ("inverse_1p",))
        >>> z.tolist()
        [1.0, 1.0, 0.25]
        >>> g = jax.grad(lambda s: gram_functions(s * G, (jnp.ones(3),), ("inverse_1p",))[0].sum())
        >>> float(g(1.0))
        -0.1875
    """
    lam, V = _eigen(G)
    return tuple(_apply(V, _FUNCTIONS[kind][0](lam), B) for B, kind in zip(Bs, kinds, strict=True))


@gram_functions.defjvp
def _gram_functions_jvp(kinds, primals, tangents):
    G, Bs = primals
    dG, dBs = tangents
    lam, V = _eigen(G)
    dGv = V.T @ dG @ V
    dGv = 0.5 * (dGv + dGv.T)
    diff = lam[:, None] - lam[None, :]
    scale = 1.0 + jnp.max(jnp.abs(lam))
    close = jnp.abs(diff) <= jnp.sqrt(jnp.finfo(lam.dtype).eps) * scale
    safe = jnp.where(close, 1.0, diff)
    mid = 0.5 * (lam[:, None] + lam[None, :])
    outs, douts = [], []
    for B, dB, kind in zip(Bs, dBs, kinds, strict=True):
        f, df = _FUNCTIONS[kind]
        fl = f(lam)
        F = jnp.where(close, df(mid), (fl[:, None] - fl[None, :]) / safe)
        VtB = V.T @ B
        outs.append(_apply(V, fl, B))
        dpart = V @ ((F * dGv) @ VtB)
        douts.append(_apply(V, fl, dB) + dpart)
    return tuple(outs), tuple(douts)
