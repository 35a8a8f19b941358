"""connguard: pooled, fork-safe, self-healing, leak-proof and observable DB connections."""

from connguard.config import PoolConfig
from connguard.errors import (
    AccessDenied,
    ConfigError,
    ForeignConnection,
    PoolClosed,
    PoolError,
    PoolTimeout,
    PoolUnavailable,
    TooManyRequests,
)
from connguard.pool import ConnectionPool

__all__ = [
    "AccessDenied",
    "ConfigError",
    "ConnectionPool",
    "ForeignConnection",
    "PoolClosed",
    "PoolConfig",
    "PoolError",
    "PoolTimeout",
    "PoolUnavailable",
    "TooManyRequests",
]
__version__ = "0.1.0"
