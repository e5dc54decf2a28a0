"""Bad inputs to every public function of jaxda.diffusion: exact error class and message,
or the status value for failures that only show at run time (nan/inf states and losses)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxda.core import Status
from jaxda.diffusion import (
    PeriodicConvNet,
    ResidualMLP,
    TrainState,
    ddpm_ancestral,
    ddpm_schedule,
    dsm_loss,
    local_score,
    lorenz63_trajectories,
    noisy_lorenz63_step,
    posterior_score,
    predictor_corrector,
    probability_flow,
    restore_checkpoint,
    reverse_sde,
    sample,
    save_checkpoint,
    sinusoidal_embedding,
    sliding_windows,
    train,
    ve,
    vp_cosine,
    vp_linear,
)

KEY = jax.random.key(0)
SDE = vp_linear()
DATA = jax.random.normal(KEY, (32, 2))
X2 = jnp.zeros(2)


def tiny():
    return ResidualMLP(2, width=4, depth=1, emb_dim=4, rngs=nnx.Rngs(0))


def unit(x, t):
    return -x


def run_train(**kw):
    args = dict(n_steps=2, batch_size=4, chunk=2, progress=False)
    args.update(kw)
    data = args.pop("data", DATA)
    model = args.pop("model", None) or tiny()
    return train(KEY, model, SDE, data, **args)


class Narrow(nnx.Module):
    def __init__(self):
        self.lin = nnx.Linear(2, 1, rngs=nnx.Rngs(0))

    def __call__(self, x, t):
        return self.lin(x)


# ------------------------------------------------------------------------------ training
TRAIN_CASES = {
    "lr zero": (dict(learning_rate=0.0), "learning_rate must be positive"),
    "lr negative": (dict(learning_rate=-1e-3), "learning_rate must be positive"),
    "lr nan": (dict(learning_rate=float("nan")), "learning_rate must be positive"),
    "n_steps zero": (dict(n_steps=0), "n_steps must be an integer >= 1"),
    "n_steps float": (dict(n_steps=2.5), "n_steps must be an integer >= 1"),
    "batch zero": (dict(batch_size=0), "batch_size must be an integer >= 1"),
    "chunk zero": (dict(chunk=0), "chunk must be an integer >= 1"),
    "checkpoint_every": (dict(checkpoint_every=0), "checkpoint_every must be an integer"),
    "on_nonfinite": (dict(on_nonfinite="ignore"), "on_nonfinite must be 'stop' or 'skip'"),
    "nan data": (dict(data=DATA.at[3, 1].set(jnp.nan)), r"data contains nan/inf values \(1 of"),
    "1-D data": (dict(data=jnp.zeros(5)), r"data must have shape \(M, ...\)"),
    "empty data": (dict(data=jnp.zeros((0, 2))), r"data must have shape \(M, ...\)"),
    "int data": (dict(data=jnp.zeros((4, 2), int)), "data must be floating point"),
    "model shape": (dict(model=Narrow()), "model output shape"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_rejects(case):
    kw, msg = TRAIN_CASES[case]
    with pytest.raises(ValueError, match=msg):
        run_train(**kw)


def test_train_nonfinite_status_and_throw():
    res = run_train(optimizer=optax.sgd(jnp.inf), n_steps=3)
    assert int(res.status) == Status.NONFINITE and res.nonfinite_step == 0 and res.n_steps == 1
    with pytest.raises(RuntimeError, match=r"NONFINITE.*at step 0"):
        run_train(optimizer=optax.sgd(jnp.inf), throw=True)


def test_dsm_loss_rejects():
    zero = lambda p, x, t: jnp.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match=r"x0 must be a batch of shape \(B, ...\)"):
        dsm_loss(KEY, zero, None, SDE, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"apply_fn returns shape \(4, 1\), expected \(4, 2\)"):
        dsm_loss(KEY, lambda p, x, t: x[:, :1], None, SDE, jnp.zeros((4, 2)))


def test_checkpoint_rejects(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        restore_checkpoint(tmp_path)
    run_train(checkpoint_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 7"):
        restore_checkpoint(tmp_path, 7)
    manifest = tmp_path / "ckpt_00000002.json"
    info = json.loads(manifest.read_text())
    info["files_sha256"]["_METADATA"] = "0" * 64
    manifest.write_text(json.dumps(info))
    with pytest.raises(
        ValueError, match="ckpt_00000002 is corrupt: hash mismatch in file _METADATA"
    ):
        restore_checkpoint(tmp_path)
    manifest.write_text("{not json")
    with pytest.raises(
        ValueError, match=r"manifest .*ckpt_00000002\.json is missing or unreadable"
    ):
        restore_checkpoint(tmp_path)
    state = TrainState(tiny(), None, -1, None)
    with pytest.raises(ValueError, match=r"state\.step must be >= 0"):
        save_checkpoint(tmp_path, state)


# ------------------------------------------------------------------------------ samplers
def nan_score(x, t):
    return x * jnp.nan


SAMPLER_CASES = {
    "reverse n_steps 0": (lambda: reverse_sde(KEY, unit, SDE, X2, n_steps=0), "n_steps must be"),
    "reverse n_steps float": (
        lambda: reverse_sde(KEY, unit, SDE, X2, n_steps=2.5),
        "n_steps must be an integer",
    ),
    "reverse solver": (lambda: reverse_sde(KEY, unit, SDE, X2, solver="rk4"), "solver must be"),
    "reverse t_end 1": (lambda: reverse_sde(KEY, unit, SDE, X2, t_end=1.0), r"t_end must be in"),
    "reverse t_end <0": (lambda: reverse_sde(KEY, unit, SDE, X2, t_end=-0.1), "t_end must be"),
    "reverse nan x_T": (
        lambda: reverse_sde(KEY, unit, SDE, jnp.array([0.0, jnp.nan])),
        "x_T contains nan/inf",
    ),
    "reverse int x_T": (lambda: reverse_sde(KEY, unit, SDE, jnp.zeros(2, int)), "floating"),
    "reverse empty x_T": (lambda: reverse_sde(KEY, unit, SDE, jnp.zeros(0)), "must not be empty"),
    "reverse score shape": (
        lambda: reverse_sde(KEY, lambda x, t: x[:1], SDE, X2),
        r"score_fn returns shape \(1,\), expected the state shape \(2,\)",
    ),
    "flow n_steps": (lambda: probability_flow(unit, SDE, X2, n_steps=-1), "n_steps must be"),
    "flow solver": (lambda: probability_flow(unit, SDE, X2, solver="rk4"), "solver must be"),
    "flow rtol": (lambda: probability_flow(unit, SDE, X2, rtol=0.0), "rtol must be positive"),
    "flow atol": (
        lambda: probability_flow(unit, SDE, X2, rtol=1e-3, atol=-1.0),
        "atol must be positive",
    ),
    "flow nan x_T": (lambda: probability_flow(unit, SDE, X2 * jnp.inf), "x_T contains nan"),
    "pc n_steps": (lambda: predictor_corrector(KEY, unit, SDE, X2, n_steps=0), "n_steps"),
    "pc n_corrector": (
        lambda: predictor_corrector(KEY, unit, SDE, X2, n_corrector=-1),
        "n_corrector must be an integer >= 0",
    ),
    "pc snr 0": (lambda: predictor_corrector(KEY, unit, SDE, X2, snr=0.0), "snr must be"),
    "pc snr nan": (lambda: predictor_corrector(KEY, unit, SDE, X2, snr=np.nan), "snr must"),
    "pc step_rule": (
        lambda: predictor_corrector(KEY, unit, SDE, X2, step_rule="huge"),
        "step_rule must be one of",
    ),
    "pc score shape": (
        lambda: predictor_corrector(KEY, lambda x, t: jnp.zeros(3), SDE, X2),
        "score_fn returns shape",
    ),
    "ddpm n_steps": (lambda: ddpm_ancestral(KEY, unit, SDE, X2, n_steps=0), "n_steps must"),
    "ddpm ve": (lambda: ddpm_ancestral(KEY, unit, ve(), X2), "variance-preserving"),
    "ddpm nan x_T": (lambda: ddpm_ancestral(KEY, unit, SDE, X2 + jnp.nan), "x_T contains"),
    "sample method": (lambda: sample(KEY, unit, SDE, (2,), 4, method="foo"), "method must be"),
    "sample n_samples": (lambda: sample(KEY, unit, SDE, (2,), 0), "n_samples must be"),
    "sample shape 0": (lambda: sample(KEY, unit, SDE, (0,), 2), "shape must have positive"),
    "sample shape float": (lambda: sample(KEY, unit, SDE, (2.5,), 2), "shape must be a tuple"),
    "sample x_T option": (lambda: sample(KEY, unit, SDE, (2,), 2, x_T=X2), "option 'x_T'"),
    "sample solver option": (
        lambda: sample(KEY, unit, SDE, (2,), 2, method="pc", solver="heun"),
        "option 'solver'",
    ),
    "sample bad option value": (
        lambda: sample(KEY, unit, SDE, (2,), 2, method="pc", snr=-1.0),
        "snr must be positive",
    ),
    "schedule n_steps": (lambda: ddpm_schedule(SDE, 0), "n_steps must be an integer >= 1"),
}


@pytest.mark.parametrize("case", list(SAMPLER_CASES))
def test_samplers_reject(case):
    fn, msg = SAMPLER_CASES[case]
    with pytest.raises(ValueError, match=msg):
        fn()


def test_nan_score_gives_nonfinite_status():
    """nan in the score is only seen at run time: status NONFINITE after the first step."""
    for fn in (
        lambda **kw: ddpm_ancestral(KEY, nan_score, SDE, X2, n_steps=4, **kw),
        lambda **kw: predictor_corrector(KEY, nan_score, SDE, X2, n_steps=4, **kw),
    ):
        res = fn()
        assert int(res.status) == Status.NONFINITE and int(res.n_steps) == 1
        with pytest.raises(RuntimeError, match=r"non-finite \(nan or inf\) \(status=3"):
            fn(throw=True)


# ------------------------------------------------------------------------------ SDEs
SDE_CASES = {
    "vp beta_min 0": (lambda: vp_linear(beta_min=0.0), "need 0 < beta_min < beta_max"),
    "vp beta order": (lambda: vp_linear(beta_min=5.0, beta_max=1.0), "need 0 < beta_min"),
    "vp beta nan": (lambda: vp_linear(beta_max=float("nan")), "need 0 < beta_min"),
    "vp beta inf": (lambda: vp_linear(beta_max=float("inf")), "need 0 < beta_min"),
    "vp t_min 0": (lambda: vp_linear(t_min=0.0), r"t_min must be in \(0.0, 0.5\]"),
    "vp t_min big": (lambda: vp_linear(t_min=0.7), "t_min must be in"),
    "cosine mu_min": (lambda: vp_cosine(mu_min=0.0), "mu_min must be in"),
    "cosine s": (lambda: vp_cosine(s=-1.0), "s must be finite and >= 0"),
    "cosine s nan": (lambda: vp_cosine(s=float("nan")), "s must be finite and >= 0"),
    "ve sigma_min": (lambda: ve(sigma_min=0.0), "need 0 < sigma_min < sigma_max"),
    "ve order": (lambda: ve(sigma_min=10.0, sigma_max=1.0), "need 0 < sigma_min"),
    "ve t_min nan": (lambda: ve(t_min=float("nan")), "t_min must be in"),
}


@pytest.mark.parametrize("case", list(SDE_CASES))
def test_sdes_reject(case):
    fn, msg = SDE_CASES[case]
    with pytest.raises(ValueError, match=msg):
        fn()


# ------------------------------------------------------------------------------ guidance
Y = jnp.ones(2)
GUIDANCE_CASES = {
    "y nan": (lambda: posterior_score(unit, SDE, lambda x: x, Y.at[0].set(jnp.nan), 0.1), "nan"),
    "y 2-D": (lambda: posterior_score(unit, SDE, lambda x: x, jnp.ones((2, 2)), 0.1), "1-D"),
    "y empty": (lambda: posterior_score(unit, SDE, lambda x: x, jnp.zeros(0), 0.1), "non-empty"),
    "obs_std 0": (lambda: posterior_score(unit, SDE, lambda x: x, Y, 0.0), "obs_std must be"),
    "obs_std <0": (lambda: posterior_score(unit, SDE, lambda x: x, Y, -1.0), "obs_std must be"),
    "obs_std nan": (lambda: posterior_score(unit, SDE, lambda x: x, Y, np.nan), "obs_std must"),
    "obs_std shape": (
        lambda: posterior_score(unit, SDE, lambda x: x, Y, jnp.ones(3)),
        "obs_std must be a scalar or have the shape of y",
    ),
    "gamma <0": (lambda: posterior_score(unit, SDE, lambda x: x, Y, 0.1, gamma=-1.0), "gamma"),
    "gamma nan": (lambda: posterior_score(unit, SDE, lambda x: x, Y, 0.1, gamma=np.nan), "gamma"),
    "obs_fn shape": (
        lambda: posterior_score(unit, SDE, lambda x: x[:1], Y, 0.1)(X2, 0.5),
        r"obs_fn returns shape \(1,\) but y has shape \(2,\)",
    ),
    "obs_cov shape": (
        lambda: posterior_score(unit, SDE, lambda x: x, Y, 0.1, obs_cov_fn=lambda t: jnp.eye(3))(
            X2, 0.5
        ),
        r"obs_cov_fn must return shape \(2, 2\)",
    ),
    "window even": (lambda: local_score(unit, 4), "odd number"),
    "window zero": (lambda: local_score(unit, 0), "odd number"),
    "window float": (lambda: local_score(unit, 3.0), "odd number"),
    "trajectory short": (lambda: local_score(unit, 5)(jnp.zeros((3, 2)), 0.1), "shorter than"),
    "trajectory scalar": (lambda: local_score(unit, 1)(jnp.zeros(()), 0.1), "needs a trajectory"),
}


@pytest.mark.parametrize("case", list(GUIDANCE_CASES))
def test_guidance_rejects(case):
    fn, msg = GUIDANCE_CASES[case]
    with pytest.raises(ValueError, match=msg):
        fn()


# ------------------------------------------------------------------------------ networks, data
OTHER_CASES = {
    "mlp dim": (lambda: ResidualMLP(0, rngs=nnx.Rngs(0)), "need dim >= 1"),
    "mlp width": (lambda: ResidualMLP(2, width=0, rngs=nnx.Rngs(0)), "need dim >= 1, width"),
    "mlp input": (lambda: tiny()(jnp.zeros((3, 5)), 0.1), "expects last axis 2"),
    "conv channels": (lambda: PeriodicConvNet(channels=0, rngs=nnx.Rngs(0)), "need channels"),
    "conv kernel": (lambda: PeriodicConvNet(kernel=0, rngs=nnx.Rngs(0)), "kernel >= 1"),
    "embedding odd": (lambda: sinusoidal_embedding(jnp.zeros(2), 3), "even number >= 2"),
    "l63 n_traj": (lambda: lorenz63_trajectories(KEY, 0, 5), "need n_traj >= 1"),
    "l63 spinup": (lambda: lorenz63_trajectories(KEY, 1, 5, spinup=-1), "spinup >= 0"),
    "l63 dt": (lambda: lorenz63_trajectories(KEY, 1, 5, dt=0.0), "dt must be positive"),
    "l63 step shape": (lambda: noisy_lorenz63_step(KEY, jnp.zeros(2)), r"shape \(3,\)"),
    "l63 step dt": (lambda: noisy_lorenz63_step(KEY, jnp.zeros(3), dt=-0.1), "dt must be"),
    "windows ndim": (lambda: sliding_windows(jnp.zeros((4, 3)), 2), r"\(B, L, d\)"),
    "windows size": (lambda: sliding_windows(jnp.zeros((1, 4, 3)), 5), r"window must be in"),
    "windows zero": (lambda: sliding_windows(jnp.zeros((1, 4, 3)), 0), r"window must be in"),
}


@pytest.mark.parametrize("case", list(OTHER_CASES))
def test_networks_and_data_reject(case):
    fn, msg = OTHER_CASES[case]
    with pytest.raises(ValueError, match=msg):
        fn()
