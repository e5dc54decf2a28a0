"""Parameter transforms: round trips, bounds respected, eager errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxda.core import bounded, positive

LO = jnp.array([0.0, -jnp.inf, 1.0, -jnp.inf])
HI = jnp.array([jnp.inf, 2.0, 3.0, jnp.inf])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-8.0, 8.0), min_size=4, max_size=4))
def test_bounded_round_trip_and_range(u):
    T = bounded(LO, HI)
    u = jnp.asarray(u)
    theta = T.forward(u)
    assert bool(jnp.all(theta > LO)) and bool(jnp.all(theta < HI))
    np.testing.assert_allclose(T.inverse(theta), u, atol=1e-8)


def test_bounded_jacobian_is_positive_and_finite():
    J = jax.jacfwd(bounded(LO, HI).forward)(jnp.array([0.3, -1.2, 2.0, 5.0]))
    d = np.diag(np.asarray(J))
    assert np.all(np.isfinite(J)) and np.all(d > 0)
    np.testing.assert_allclose(np.asarray(J) - np.diag(d), 0.0)


def test_positive_is_exp():
    np.testing.assert_allclose(positive().forward(jnp.array([0.0, 1.0])), [1.0, np.e])


@pytest.mark.parametrize(
    ("lower", "upper", "match"),
    [(1.0, 1.0, "strictly below"), (jnp.nan, 1.0, "NaN"), (jnp.zeros(2), jnp.ones(3), "broadcast")],
)
def test_bounded_rejects_bad_bounds(lower, upper, match):
    with pytest.raises(ValueError, match=match):
        bounded(lower, upper)
