"""Time PureJaxRL's CartPole DQN, unmodified, for the side-by-side speed comparison.

    python benchmarks/speed/purejaxrl_dqn.py PUREJAXRL_CHECKOUT SEEDS STEPS

PUREJAXRL_CHECKOUT is a clone of https://github.com/luchris429/purejaxrl at commit
31756b197773a52db763fdbe6d635e4b46522a73 (its code is not part of distbench). Its `dqn.py` runs
as published, at the configuration of its `main()`, with two shims for today's libraries:
`jax.tree_map` (removed from JAX) is aliased to `jax.tree.map`, and `wandb` (only used to log)
is a stub. It needs the gymnax API it was written for and flashbax, ahead of distbench's gymnax
on PYTHONPATH: `pip install --no-deps --target DIR gymnax==0.0.8 flashbax==0.1.3`, then
`PYTHONPATH=DIR`. Prints one JSON line: env steps/s of the compiled `jit(vmap(train))` over
SEEDS seeds, timed after compilation, and its compile seconds.
"""

import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import jax

# PureJaxRL's CartPole DQN configuration, as in its dqn.py main().
CONFIG = {
    "NUM_ENVS": 10,
    "BUFFER_SIZE": 10000,
    "BUFFER_BATCH_SIZE": 128,
    "EPSILON_START": 1.0,
    "EPSILON_FINISH": 0.05,
    "EPSILON_ANNEAL_TIME": 25e4,
    "TARGET_UPDATE_INTERVAL": 500,
    "LR": 2.5e-4,
    "LEARNING_STARTS": 10000,
    "TRAINING_INTERVAL": 10,
    "LR_LINEAR_DECAY": False,
    "GAMMA": 0.99,
    "TAU": 1.0,
    "ENV_NAME": "CartPole-v1",
    "WANDB_MODE": "disabled",
}


def load_dqn(checkout: Path):
    jax.tree_map = jax.tree.map
    sys.modules["wandb"] = types.SimpleNamespace(log=lambda *a, **k: None)
    spec = importlib.util.spec_from_file_location("purejaxrl_dqn", checkout / "purejaxrl/dqn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(checkout: str, seeds: str, steps: str) -> None:
    dqn = load_dqn(Path(checkout))
    config = {**CONFIG, "TOTAL_TIMESTEPS": int(steps)}
    keys = jax.random.split(jax.random.PRNGKey(0), int(seeds))
    start = time.perf_counter()
    train = jax.jit(jax.vmap(dqn.make_train(config))).lower(keys).compile()
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(train(keys))
    seconds = time.perf_counter() - start
    rate = int(seeds) * int(steps) / seconds
    print(json.dumps({"env_steps_per_second": rate, "compile_seconds": compile_seconds}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
