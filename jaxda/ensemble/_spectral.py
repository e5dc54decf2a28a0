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
custom JVP: first derivatives are finite and exact for any multiplicity (second derivatives,
e.g. ``jax.hessian``, differentiate the rule's own ``eigh``: exact where the eigenvalues are
distinct).

The forward pass needs no decomposition at all when the spectrum is narrow, as it is in the
usual regime (observation errors not much smaller than the spread, a few dozen members): the
functions are analytic on ``[0, λ_max]``, so a truncated Chebyshev expansion in matrix products
reaches rounding accuracy in a few terms, and on CPU it is several times cheaper than LAPACK's
``eigh`` of these small matrices (and free of the thread-pool stalls of XLA:CPU's triangular
solves). :func:`batched_gram_functions` picks that route where it is accurate and ``eigh``
otherwise; :func:`gram_functions` is its one-matrix case.
"""

from __future__ import annotations

from functools import cache, partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
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
    r"""``f(G) B`` for each pair of ``Bs`` (vectors or matrices) and ``kinds``, for the symmetric
    positive semi-definite ``G``: by a Chebyshev expansion where it reaches rounding accuracy,
    else from one eigen-decomposition (``solver="auto"`` of :func:`batched_gram_functions`).

    ``kinds`` name the functions ``"inverse_1p"`` (``(I+G)^{-1}``), ``"inverse_sqrt_1p"``
    (``(I+G)^{-1/2}``) and ``"sqrt_correction"`` (``((I+G)^{-1/2} - I)G^{-1}``, finite on the
    null space of ``G``). The derivative is the Daleckii–Krein formula (module docstring).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> G = jnp.diag(jnp.array([0.0, 0.0, 3.0]))      # a repeated eigenvalue
        >>> (z,) = gram_functions(G, (jnp.ones(3),), ("inverse_1p",))
        >>> [round(v, 12) for v in z.tolist()]
        [1.0, 1.0, 0.25]
        >>> g = jax.grad(lambda s: gram_functions(s * G, (jnp.ones(3),), ("inverse_1p",))[0].sum())
        >>> float(g(1.0))
        -0.1875
    """
    out = _batched_primal(G[None], tuple(B[None] for B in Bs), kinds, "auto")
    return tuple(o[0] for o in out)


def _by_eigh(G, Bs, kinds):
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


# ------------------------------------------------------------------ many small Gram matrices
SOLVERS = ("auto", "eigh", "chebyshev")
"""How :func:`batched_gram_functions` applies the matrix functions (see its docstring)."""

_CHEB_NODES = 128  # Chebyshev interpolation nodes: the largest degree the expansion may use


def check_solver(solver) -> None:
    """Raise a ``ValueError`` unless ``solver`` is one of :data:`SOLVERS` (eager)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")


def _cheb_coefficients(fun, L, dtype):
    """Chebyshev coefficients of ``fun`` on ``[0, L]`` from its values at ``_CHEB_NODES`` nodes."""
    D = _CHEB_NODES
    theta = (np.arange(D) + 0.5) * (np.pi / D)
    cos = np.cos(np.outer(np.arange(D), theta)) * (2.0 / D)
    cos[0] *= 0.5
    lam = 0.5 * L * (1.0 + jnp.asarray(np.cos(theta), dtype))
    return jnp.asarray(cos, dtype) @ fun(lam)


def _chebyshev_apply(G, Bs, C, L, degree):
    """``Σ_{j<degree} c_j T_j(2G/L - I) B`` for each ``B`` (``(b, s)`` or ``(b, s, r)``) with the
    matching column of the coefficients ``C``; one recurrence for all right-hand sides."""
    cols = [B[..., None] if B.ndim == 2 else B for B in Bs]
    widths = [c.shape[-1] for c in cols]
    X0 = jnp.concatenate(cols, axis=-1)  # (b, s, R)
    Cr = jnp.repeat(C, np.asarray(widths), axis=1, total_repeat_length=sum(widths))  # (D, R)
    scale = 2.0 / L

    def shifted(X):
        return scale * jnp.einsum("bij,bjr->bir", G, X) - X

    X1 = shifted(X0)
    acc = Cr[0] * X0 + Cr[1] * X1

    def body(j, carry):
        X_prev, X, acc = carry
        X_next = 2.0 * shifted(X) - X_prev
        return X, X_next, acc + Cr[j] * X_next

    _, _, acc = jax.lax.fori_loop(2, degree, body, (X0, X1, acc))
    outs, start = [], 0
    for B, w in zip(Bs, widths, strict=True):
        out = acc[..., start : start + w]
        outs.append(out[..., 0] if B.ndim == 2 else out)
        start += w
    return tuple(outs)


def _chebyshev_degree(C, L, dtype):
    """Smallest degree ``d`` whose dropped coefficients sum below ``32 ε`` for every function on
    ``[0, L]``; ``_CHEB_NODES + 1`` when the coefficients do not get there.

    The coefficients decay geometrically, ``|c_j| ≲ M ρ^{-j}``, so the dropped tail is at most
    ``|c_d| ρ/(ρ - 1)``; ``|c_d|`` is read on four consecutive coefficients (rounding in the
    coefficients themselves is about ``ε``, so very wide spectra fall back)."""
    size = jnp.max(jnp.abs(C), axis=-1)  # (D,)
    window = jnp.max(jnp.stack([jnp.roll(size, -i) for i in range(4)]), axis=0)
    a = 1.0 + 2.0 / L
    rho = a + jnp.sqrt(a * a - 1.0)
    below = window * rho / (rho - 1.0) < 32.0 * jnp.finfo(dtype).eps
    below = below & (jnp.arange(_CHEB_NODES) < _CHEB_NODES - 4)
    return jnp.where(jnp.any(below), jnp.argmax(below), _CHEB_NODES + 1).astype(jnp.int32)


def _spectral_bound(G):
    """An upper bound of ``λ_max`` of each PSD ``G``: the smallest of its trace, its Frobenius
    norm ``(Σ λ_i²)^{1/2}`` and its largest absolute row sum (Gershgorin); the bound of the
    whole batch."""
    trace = jnp.einsum("bii->b", G)
    frobenius = jnp.sqrt(jnp.sum(G * G, axis=(-2, -1)))
    rows = jnp.max(jnp.sum(jnp.abs(G), axis=-1), axis=-1)
    return jnp.max(jnp.minimum(jnp.minimum(trace, frobenius), rows))


@partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def batched_gram_functions(
    G: Float[Array, "b s s"],
    Bs: tuple[Array, ...],
    kinds: tuple[str, ...],
    solver: str = "auto",
) -> tuple[Array, ...]:
    r""":func:`gram_functions` for a batch of ``b`` matrices.

    ``G`` is ``(b, s, s)`` and every ``B`` in ``Bs`` is ``(b, s)`` (a vector per matrix) or
    ``(b, s, r)`` (``r`` right-hand sides). ``solver``:

    * ``"eigh"``: one eigen-decomposition per matrix (LAPACK on CPU), as :func:`gram_functions`;
    * ``"chebyshev"``: the truncated Chebyshev expansion ``f(G)B ≈ Σ_{j<d} c_j T_j(2G/L - I) B``
      on ``[0, L]``, ``L`` an upper bound of every ``λ_max`` in the batch (trace or Gershgorin),
      ``d`` matrix–vector products per matrix and no decomposition. The functions are analytic
      on ``[0, L]`` with their only singularity at ``λ = -1``, so the coefficients decay like
      ``ρ^{-j}``, ``ρ = a + √(a²-1)``, ``a = 1 + 2/L`` (Trefethen 2019, *Approximation Theory and
      Approximation Practice*, thm. 8.2); ``d`` is the smallest degree whose dropped
      coefficients sum below ``64 ε`` (so the result agrees with ``"eigh"`` to rounding).
      Small when the local observations are few or noisy relative to the spread (``d = 8``
      for ``L ≈ 1``, ``d ≈ 25`` for ``L ≈ 10`` in single precision);
    * ``"auto"``: ``"chebyshev"`` when the expansion reaches rounding accuracy within its
      ``128`` coefficients, else ``"eigh"``, decided per call (per block of grid points in the
      LETKF) with ``lax.cond``. On CPU the expansion is faster than the batched ``eigh`` up to
      that degree (``benchmarks/bench_letkf.py``).

    Derivatives are those of :func:`gram_functions` whatever the solver (Daleckii–Krein).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> A = jax.random.normal(jax.random.key(0), (3, 6, 4))
        >>> G = jnp.einsum("bni,bnj->bij", A, A) / 6
        >>> v = jnp.ones((3, 4))
        >>> (x,) = batched_gram_functions(G, (v,), ("inverse_1p",), "chebyshev")
        >>> ref = jnp.linalg.solve(jnp.eye(4) + G, v[..., None])[..., 0]
        >>> bool(jnp.allclose(x, ref, atol=1e-5))
        True
    """
    check_solver(solver)
    return _batched_primal(G, Bs, kinds, solver)


def _batched_primal(G, Bs, kinds, solver):
    return _primal_function(kinds, solver)(G, tuple(Bs))


@cache
def _primal_function(kinds, solver):
    """The forward pass for these static options, with a batching rule: under ``jax.vmap`` the
    mapped axis joins the batch of matrices, so one spectral bound and one ``lax.cond`` decide
    for all of them (a per-member predicate would make ``cond`` run both branches)."""

    @jax.custom_batching.custom_vmap
    def primal(G, Bs):
        return _batched_forward(G, Bs, kinds, solver)

    @primal.def_vmap
    def _rule(axis_size, in_batched, G, Bs):
        def merge(a, batched):
            a = a if batched else jnp.broadcast_to(a, (axis_size, *a.shape))
            return a.reshape((axis_size * a.shape[1], *a.shape[2:]))

        G_b, Bs_b = in_batched
        out = primal(merge(G, G_b), tuple(merge(B, b) for B, b in zip(Bs, Bs_b, strict=True)))
        out = tuple(o.reshape((axis_size, -1, *o.shape[1:])) for o in out)
        return out, tuple(True for _ in out)

    return primal


def _batched_forward(G, Bs, kinds, solver):
    def by_eigh():
        return jax.vmap(lambda g, bs: _by_eigh(g, bs, kinds))(G, tuple(Bs))

    if solver == "eigh":
        return by_eigh()
    L = jnp.maximum(_spectral_bound(G), jnp.finfo(G.dtype).tiny)
    C = jnp.stack([_cheb_coefficients(_FUNCTIONS[k][0], L, G.dtype) for k in kinds], -1)
    degree = _chebyshev_degree(C, L, G.dtype)
    if solver == "chebyshev":
        degree = eqx.error_if(
            degree,
            degree > _CHEB_NODES,
            "solver='chebyshev': the Gram matrices' spectrum is too wide for the expansion to "
            "reach rounding accuracy; use solver='auto' or 'eigh'",
        )
        return _chebyshev_apply(G, Bs, C, L, degree)
    fast = (degree <= _CHEB_NODES) & jnp.isfinite(L)
    return jax.lax.cond(fast, lambda: _chebyshev_apply(G, Bs, C, L, degree), by_eigh)


@batched_gram_functions.defjvp
def _batched_gram_functions_jvp(kinds, solver, primals, tangents):
    del solver
    out, dout = jax.vmap(lambda p, t: _gram_functions_jvp(kinds, p, t))(primals, tangents)
    return out, dout
