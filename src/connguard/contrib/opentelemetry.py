"""OpenTelemetry metrics of every connguard pool (``pip install 'django-connguard[opentelemetry]'``).

:func:`instrument` creates, on the meter ``connguard``, one asynchronous instrument per stat,
read when the SDK collects (nothing runs on the checkout path):

- each gauge of :data:`connguard.metrics.GAUGES` as an ``ObservableGauge``
  ``connguard.<stat>`` (``connguard.pool_size``, …);
- each counter of :data:`connguard.metrics.COUNTERS` as an ``ObservableCounter``
  ``connguard.<stat>`` (cumulative), the ``*_ms`` ones in seconds as ``connguard.<stat>_time``
  with unit ``s`` (``requests_wait_ms`` -> ``connguard.requests_wait_time``).

One attribute, ``pool`` (the pool's name); pools of one name in a process are summed. Every
process reports its own pools under its own resource, and the collector or backend sums
across processes: unlike Prometheus, no shared directory is needed under gunicorn.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

try:
    from opentelemetry import metrics as otel
    from opentelemetry.metrics import CallbackOptions, Observation
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "connguard.contrib.opentelemetry needs the opentelemetry-api package: "
        "pip install 'django-connguard[opentelemetry]'"
    ) from exc

from connguard import metrics

METER = "connguard"


def instrument_name(stat: str) -> tuple[str, str, float]:
    """``(name, unit, scale)`` of a stat."""
    if stat.endswith("_ms"):
        return f"connguard.{stat[:-3]}_time", "s", 0.001
    return f"connguard.{stat}", "1", 1.0


def _callback(stat: str, scale: float) -> Any:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        per_pool = metrics.stats_by_name(metrics.all_pools())
        return [Observation(s[stat] * scale, {"pool": name}) for name, s in per_pool.items()]

    return observe


_GLOBAL = object()
_instrumented: dict[object, list[Any]] = {}


def instrument(meter_provider: Any = None) -> list[Any]:
    """Register the instruments with *meter_provider* (the global one unless given); once
    per provider. Returns the instruments."""
    key = _GLOBAL if meter_provider is None else meter_provider
    if key in _instrumented:
        return _instrumented[key]
    meter = otel.get_meter(METER, meter_provider=meter_provider)
    made: list[Any] = []
    for stat, meaning in metrics.GAUGES.items():
        name, unit, scale = instrument_name(stat)
        made.append(
            meter.create_observable_gauge(
                name, callbacks=[_callback(stat, scale)], unit=unit, description=meaning
            )
        )
    for stat, meaning in metrics.COUNTERS.items():
        name, unit, scale = instrument_name(stat)
        made.append(
            meter.create_observable_counter(
                name, callbacks=[_callback(stat, scale)], unit=unit, description=meaning
            )
        )
    _instrumented[key] = made
    return made
