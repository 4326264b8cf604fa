"""litemaas-cache-operator: a two-tier cache and operator for LiteMaaS / LiteLLM usage analytics."""

__version__ = "0.1.0"
