"""How one crpo_jax parameter maps to Hugging Face safetensors keys.

Each module that owns weights (text decoder, vision encoder, head) lists its
parameters as `HFParam`s; `hf_io` streams them in and out generically, one
parameter (all of its stacked layers) at a time.
"""

from __future__ import annotations

import dataclasses

# Tensor layout transforms between torch and crpo_jax.
IDENTITY = "identity"  # same layout (norm weights, biases, embedding tables)
TRANSPOSE = "transpose"  # torch Linear [out, in] <-> kernel [in, out]
PATCH_CONV = "patch_conv"  # Conv3d [D, C, T, P, P] <-> kernel [C*T*P*P, D]


@dataclasses.dataclass(frozen=True)
class HFParam:
  """One parameter of an `nnx.State` and the HF key(s) it is stored under.

  Attributes:
    path: path of the Variable in `nnx.state(model)` (strings and ints).
    hf_key: safetensors key; contains '{i}' when the parameter is stacked.
    num_layers: size of the leading stacked axis; None for an unstacked parameter.
    transform: IDENTITY, TRANSPOSE or PATCH_CONV, applied per layer slice.
  """

  path: tuple[str | int, ...]
  hf_key: str
  num_layers: int | None = None
  transform: str = IDENTITY

  def keys(self) -> list[str]:
    if self.num_layers is None:
      return [self.hf_key]
    return [self.hf_key.format(i=i) for i in range(self.num_layers)]

  def prefixed(self, path_prefix: tuple[str | int, ...]) -> HFParam:
    return dataclasses.replace(self, path=tuple(path_prefix) + tuple(self.path))
