"""hebbret: Hebbian representation learning for content-based image retrieval, in JAX."""

from hebbret.errors import InputError

__all__ = ["InputError"]
__version__ = "0.1.0"
