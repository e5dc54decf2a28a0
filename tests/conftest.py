import os

# Most of the suite's CPU time is XLA compiling many small, short-running programs, and most of
# that is LLVM's optimisation passes. Backend level 0 (default 3 on CPU) keeps the same HLO and
# compiles fastest: a cold run of the whole suite took 10 min 38 s at level 0 against 13 min 50 s
# at level 1 (same machine, idle, issue 15); rounding may differ in the last digits, which no
# test relies on. Set before JAX starts its backend; subprocesses (notebook kernels, CLI runs,
# the 4-device sharding run) inherit it. An explicit level in the caller's XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import tempfile

import jax

jax.config.update("jax_enable_x64", True)

# Many tests compile the same programs (the same filter on the same small twin, the same
# doctest setup) from different Python closures, in two xdist workers: JAX's persistent
# compilation cache, keyed on the optimised HLO, the flags and the JAX version, lets the second
# compilation of an identical program load the first one's executable (measured: -10% CPU on
# test_twin + test_gradients + test_ensemble_kalman from an empty cache). It changes no result:
# an identical program gives an identical executable.
jax.config.update(
    "jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "jaxda-tests-xla-cache")
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
