"""Exports one batch of OpenTelemetry metrics (counter, up-down counter,
gauge, histogram, exponential histogram) to Canopy with the official Python
SDK over OTLP gRPC or OTLP HTTP, and prints as JSON exactly the data points
the SDK exported, for the Rust test to compare with what Canopy stores.

usage: export_metrics.py grpc|http ENDPOINT
"""

import json
import sys

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram,
    Gauge,
    Histogram,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

mode, endpoint = sys.argv[1], sys.argv[2]
if mode == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    inner = OTLPMetricExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    inner = OTLPMetricExporter(endpoint=endpoint)

sent = []


def attrs(a):
    return {k: str(v) for k, v in (a or {}).items()}


class Recording(MetricExporter):
    """Delegates to the OTLP exporter and remembers what it exported."""

    def __init__(self):
        super().__init__(preferred_temporality=inner._preferred_temporality, preferred_aggregation=inner._preferred_aggregation)

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = inner.export(metrics_data, timeout_millis=timeout_millis)
        if result != MetricExportResult.SUCCESS:
            raise SystemExit(f"export failed: {result}")
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    d = m.data
                    kind = type(d).__name__
                    for p in d.data_points:
                        e = {"name": m.name, "unit": m.unit, "kind": kind, "attributes": attrs(p.attributes), "time": p.time_unix_nano}
                        if isinstance(d, Sum):
                            e.update(value=float(p.value), monotonic=d.is_monotonic, temporality=d.aggregation_temporality.name.lower())
                        elif isinstance(d, Gauge):
                            e.update(value=float(p.value))
                        elif isinstance(d, Histogram):
                            e.update(count=p.count, sum=p.sum, min=p.min, max=p.max, bounds=list(p.explicit_bounds), counts=list(p.bucket_counts))
                        elif isinstance(d, ExponentialHistogram):
                            e.update(
                                count=p.count, sum=p.sum, min=p.min, max=p.max, scale=p.scale, zero_count=p.zero_count,
                                positive_offset=p.positive.offset, positive_counts=list(p.positive.bucket_counts),
                                negative_offset=p.negative.offset, negative_counts=list(p.negative.bucket_counts),
                            )
                        sent.append(e)
        return result

    def force_flush(self, timeout_millis=10_000):
        return inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis=30_000, **kwargs):
        inner.shutdown(timeout_millis=timeout_millis)


reader = PeriodicExportingMetricReader(Recording(), export_interval_millis=3_600_000)
provider = MeterProvider(
    resource=Resource.create({"service.name": f"canopy-test-{mode}", "deployment.environment": "test"}),
    metric_readers=[reader],
    views=[View(instrument_name="test.size", aggregation=ExponentialBucketHistogramAggregation(max_size=20))],
)
meter = provider.get_meter("canopy.test", "1.2.3")

requests = meter.create_counter("test.requests", unit="{request}")
requests.add(5, {"route": "/a"})
requests.add(7, {"route": "/a"})
requests.add(2, {"route": "/b"})
depth = meter.create_up_down_counter("test.queue.depth", unit="{item}")
depth.add(10)
depth.add(-3)
temperature = meter.create_gauge("test.temperature", unit="Cel")
temperature.set(21.5, {"room": "lab"})
latency = meter.create_histogram("test.latency", unit="ms")
for v in (3, 7, 120):
    latency.record(v, {"route": "/a"})
size = meter.create_histogram("test.size", unit="By")
for v in (1.5, 3, 700):
    size.record(v)

provider.force_flush()
provider.shutdown()
print(json.dumps(sent))
