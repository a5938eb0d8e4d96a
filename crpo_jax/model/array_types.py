"""Shape-annotated array types: jaxtyping when installed, plain `jax.Array` otherwise.

`crpo_jax.model` must import on a bare accelerator image (jax, flax, numpy,
safetensors). jaxtyping is only documentation here, so without it `Float[Array,
"B T D"]` degrades to `jax.Array` instead of failing the import.
"""

try:
  from jaxtyping import Array, Bool, Float, Int
except ImportError:  # bare accelerator image
  from jax import Array

  class _Shaped:
    """`Kind[Array, "dims"]` evaluates to the array type itself."""

    def __class_getitem__(cls, params):
      return params[0] if isinstance(params, tuple) else params

  class Float(_Shaped):
    pass

  class Int(_Shaped):
    pass

  class Bool(_Shaped):
    pass


__all__ = ["Array", "Bool", "Float", "Int"]
