"""jaxcomp: learned lossy image compression in JAX/Flax.

Subpackages by concern: ``data`` (the one input pipeline), ``metrics``, ``entropy`` (quantizers, entropy models,
range coding, bitstreams), ``nn`` (shared layers), ``train`` (the harness), ``methods`` (the four papers),
``parallel`` (the only module that knows about pmap/shard_map) and a thin ``cli``.
"""

__version__ = "0.1.0"
