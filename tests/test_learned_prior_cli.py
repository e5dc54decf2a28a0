"""The learned-prior filter from a checkpoint: the manifest rebuilds the score model and its SDE,
the registry and the CLI run it, and every mismatch fails with one sentence."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxda.assimilate import diffusion_filter_from_checkpoint
from jaxda.cli import main
from jaxda.diffusion import (
    SDE,
    GaussianResidual,
    PeriodicConvNet,
    diffusion_filter,
    restore_checkpoint,
    train,
    vp_linear,
)
from jaxda.observations import observation_model, subset

N_STATE = 8


def _cov(n):
    i = np.arange(n)
    d = np.minimum(np.abs(i[:, None] - i[None, :]), n - np.abs(i[:, None] - i[None, :]))
    return jnp.asarray(np.exp(-0.5 * d**2))


def _train(directory, model, sde, n_steps=6, key=0):
    errors = jax.random.normal(jax.random.key(key), (64, N_STATE))
    return train(
        jax.random.key(key + 1), model, sde, errors, n_steps=n_steps, batch_size=16,
        checkpoint_dir=directory, progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def gaussian_checkpoint(tmp_path_factory):
    """A GaussianResidual whose learned correction is zero (network weights zero, learning rate
    negligible): exactly the Gaussian prior N(0, C), so the filter must track."""
    directory = tmp_path_factory.mktemp("gauss")
    sde = vp_linear()
    net = PeriodicConvNet(channels=4, depth=1, rngs=nnx.Rngs(0))
    nnx.update(net, jax.tree.map(jnp.zeros_like, nnx.state(net, nnx.Param)))
    errors = jax.random.normal(jax.random.key(0), (64, N_STATE))
    train(
        jax.random.key(1), GaussianResidual(net, _cov(N_STATE), sde), sde, errors, n_steps=2,
        batch_size=16, learning_rate=1e-12, checkpoint_dir=directory, progress=False,
    )  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def residual_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("score")
    sde = vp_linear(beta_max=15.0)
    net = PeriodicConvNet(channels=4, depth=1, rngs=nnx.Rngs(0))
    result = _train(directory, GaussianResidual(net, _cov(N_STATE), sde), sde)
    return directory, result.model, sde


def test_checkpoint_rebuilds_the_gaussian_residual_and_its_sde(residual_checkpoint):
    directory, trained, sde = residual_checkpoint
    restored = restore_checkpoint(directory)  # no template
    assert isinstance(restored.model, GaussianResidual)
    assert restored.sde is not None and restored.sde.params == sde.params
    x = jax.random.normal(jax.random.key(5), (3, N_STATE))
    t = jnp.asarray([0.05, 0.4, 0.9])
    np.testing.assert_array_equal(restored.model(x, t), trained(x, t))
    np.testing.assert_allclose(restored.model.cov[...], _cov(N_STATE))
    np.testing.assert_array_equal(restored.sde.std(t), sde.std(t))


def test_resuming_with_another_sde_is_refused(tmp_path):
    net = PeriodicConvNet(channels=4, depth=1, rngs=nnx.Rngs(0))
    _train(tmp_path, net, vp_linear(), n_steps=4)
    with pytest.raises(ValueError, match="resume with the same SDE"):
        _train(tmp_path, net, vp_linear(beta_max=10.0), n_steps=8)


def test_checkpoint_filter_equals_the_filter_built_from_the_score(residual_checkpoint):
    """The registry's method is diffusion_filter with the restored score, SDE, taper and C_θ:
    same key, same analysis as the one built by hand (taper computed independently here)."""
    directory, trained, sde = residual_checkpoint
    from jaxda.diffusion import score_fn_from_model

    i = np.arange(N_STATE)
    d = np.minimum(np.abs(i[:, None] - i[None, :]), N_STATE - np.abs(i[:, None] - i[None, :]))
    c = 2.0 * np.sqrt(10.0 / 3.0)  # Gaspari–Cohn half-width for DAPPER's radius 2
    r = np.maximum(d / c, 1e-12)  # the r <= 2 branch is not taken at 0
    gc = np.where(
        r <= 1,
        -(r**5) / 4 + r**4 / 2 + 5 * r**3 / 8 - 5 * r**2 / 3 + 1,
        np.where(
            r <= 2, r**5 / 12 - r**4 / 2 + 5 * r**3 / 8 + 5 * r**2 / 3 - 5 * r + 4 - 2 / (3 * r), 0
        ),
    )
    by_hand = diffusion_filter(
        score_fn_from_model(trained, sde), sde, localization=jnp.asarray(gc),
        prior_cov=_cov(N_STATE), n_steps=5,
    )  # fmt: skip
    method = diffusion_filter_from_checkpoint(directory, localization_radius=2.0, n_steps=5)
    obs = observation_model(subset([0, 2, 4, 6], n=N_STATE), obs_std=1.0)
    E = 1.0 + jax.random.normal(jax.random.key(1), (6, N_STATE))
    y = jnp.asarray([0.5, np.nan, 2.0, 1.0])
    a, info = method.step(jax.random.key(2), method.init(E), y, obs)
    b, _ = by_hand.step(jax.random.key(2), by_hand.init(E), y, obs)
    np.testing.assert_allclose(a.ensemble, b.ensemble, rtol=1e-6, atol=1e-6)
    assert int(info.n_obs) == 3 and np.all(np.isfinite(a.ensemble))


def test_checkpoint_filter_errors(residual_checkpoint, tmp_path):
    directory, _, _ = residual_checkpoint
    method = diffusion_filter_from_checkpoint(directory, n_steps=3)
    obs = observation_model(subset([0, 1], n=5), obs_std=1.0)
    with pytest.raises(ValueError, match="states of size 8"):
        method.step(jax.random.key(0), method.init(jnp.ones((4, 5))), jnp.zeros(2), obs)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        diffusion_filter_from_checkpoint(tmp_path / "empty")
    # a plain network has no Gaussian fit to localize
    plain = tmp_path / "plain"
    _train(plain, PeriodicConvNet(channels=4, depth=1, rngs=nnx.Rngs(0)), vp_linear(), n_steps=2)
    diffusion_filter_from_checkpoint(plain, n_steps=3)  # fine without localization
    with pytest.raises(ValueError, match="must hold a jaxda\\.diffusion\\.GaussianResidual"):
        diffusion_filter_from_checkpoint(plain, localization_radius=2.0)
    # a custom SDE is not recorded: the checkpoint cannot say how to sample
    base = vp_linear()
    custom = SDE("mine", base.log_mean, base.std, base.drift, base.diffusion, base.t_min)
    own = tmp_path / "custom"
    _train(own, PeriodicConvNet(channels=4, depth=1, rngs=nnx.Rngs(0)), custom, n_steps=2)
    with pytest.raises(ValueError, match="does not record its SDE"):
        diffusion_filter_from_checkpoint(own)


def test_cli_runs_the_learned_prior_filter(gaussian_checkpoint, capsys):
    """``jaxda run --method diffusion_filter``: Lorenz-96 (n = 8), every other variable
    observed (R = I); with a Gaussian prior the analysis tracks the truth."""
    directory = gaussian_checkpoint
    argv = [
        "run", "--method", "diffusion_filter", "--score-checkpoint", str(directory),
        "--dim", str(N_STATE), "--obs-stride", "2", "--localization-radius", "2",
        "--sampler-steps", "10", "-N", "10", "--cycles", "40", "--burn-in", "10",
        "--pairing", "transport", "--inflation", "1.04", "--json", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "diffusion_filter" and out["obs_stride"] == 2
    assert out["pairing"] == "transport" and out["inflation"] == 1.04
    assert out["status"] == "SUCCESS"  # finite, and errors consistent with the spread
    # the climatological std of Lorenz-96 is about 3.6: an analysis error well below it
    # (and below the unit observation error) means the filter tracks
    assert out["rmse_analysis"] < 1.0 and out["spread_analysis"] > 0.0
    assert out["n_steps"] == 10 and out["localization_radius"] == 2.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs option(s) ['score_checkpoint']"),
        (["--score-checkpoint", "/nonexistent/ckpt"], "no complete checkpoint"),
    ],
)
def test_cli_learned_prior_filter_errors(extra, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--method", "diffusion_filter", "--cycles", "5", *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_obs_stride_observes_every_kth_variable(capsys):
    argv = ["run", "--method", "letkf", "--obs-stride", "2", "--cycles", "30", "--json"]
    assert main([*argv, "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["obs_stride"] == 2 and np.isfinite(out["rmse_analysis"])
    with pytest.raises(SystemExit):
        main(["run", "--obs-stride", "2", "--observations", "x.nc"])
    assert "carries its own operator" in capsys.readouterr().err
