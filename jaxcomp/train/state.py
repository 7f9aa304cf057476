"""The train state: one pytree holding everything a step changes, so checkpoints and resumes are exact.

Several networks trained together (generator/discriminator, compressor/proxy) are several `TrainState`s in one
dict, e.g. `{"gen": TrainState, "disc": TrainState}`, each with its own optimizer; the harness (parallel, checkpoint,
restore) takes any such pytree.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
  """Parameters, optax state, mutable collections, step and PRNG key of one network.

  Attributes:
    step: int32 scalar, number of optimizer updates applied.
    params: the `params` collection.
    opt_state: the optax state of `tx`.
    mutable: the other variable collections, e.g. `{"batch_stats": ...}`; `{}` when there are none.
    rng: a raw `uint32[2]` PRNG key, advanced with `next_key` (never reused), so resumed runs draw the same numbers.
    tx: the optax transformation (static, not saved: it is rebuilt from the config).
  """

  step: jax.Array
  params: PyTree
  opt_state: optax.OptState
  mutable: PyTree
  rng: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(
      cls,
      *,
      params: PyTree,
      tx: optax.GradientTransformation,
      rng: jax.Array,
      mutable: Mapping[str, PyTree] | None = None,
  ) -> "TrainState":
    """A fresh state at step 0. `rng` is a raw key (`jax.random.PRNGKey(seed)`), `mutable` e.g. batch_stats."""
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        mutable=dict(mutable or {}),
        rng=jnp.asarray(rng, jnp.uint32),
        tx=tx,
    )

  @classmethod
  def from_variables(cls, variables: Mapping[str, PyTree], *, tx: optax.GradientTransformation,
                     rng: jax.Array) -> "TrainState":
    """Splits flax `model.init(...)` output into `params` and the other (mutable) collections."""
    variables = dict(variables)
    params = variables.pop("params")
    return cls.create(params=params, tx=tx, rng=rng, mutable=variables)

  @property
  def variables(self) -> dict[str, PyTree]:
    """`{"params": ..., **mutable}`, ready for `model.apply`."""
    return {"params": self.params, **self.mutable}

  def next_key(self) -> tuple["TrainState", jax.Array]:
    """Splits the state's key: returns the state with its advanced key, and a fresh key for this step."""
    rng, key = jax.random.split(self.rng)
    return self.replace(rng=rng), key

  def apply_gradients(self, grads: PyTree, *, mutable: Mapping[str, PyTree] | None = None,
                      **extra_args: Any) -> "TrainState":
    """One optimizer update; `mutable` replaces the mutable collections (e.g. updated batch_stats).

    `extra_args` go to `tx.update` (e.g. `value=` for optax.contrib.reduce_on_plateau).
    """
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params, **extra_args)
    return self.replace(
        step=self.step + 1,
        params=optax.apply_updates(self.params, updates),
        opt_state=opt_state,
        mutable=self.mutable if mutable is None else {**self.mutable, **mutable},
    )


def learning_rate(schedule: optax.Schedule | float, step: jax.Array | int) -> float:
  """The learning rate at `step` for logging, whether `schedule` is a constant or an optax schedule."""
  return float(schedule(step)) if callable(schedule) else float(schedule)
