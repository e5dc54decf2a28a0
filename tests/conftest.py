import os

# Most of the suite's CPU time is XLA compiling many small, short-running programs, and most of
# that is LLVM's optimisation passes. Backend level 1 (default 3 on CPU) keeps the same HLO (same
# operations, same order, no fast-math) and compiles faster without slowing the long-running
# tests (measured: test_esmda.py 94 -> 75 user-CPU s, test_notebooks.py 91 -> 79). Set before
# JAX starts its backend; subprocesses (notebook kernels, CLI runs, the 4-device sharding run)
# inherit it. An explicit level in the caller's XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1"
    ).strip()

import jax

jax.config.update("jax_enable_x64", True)
