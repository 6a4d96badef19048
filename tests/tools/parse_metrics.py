"""Parses an OpenMetrics exposition (stdin) with the reference parser of prometheus-client and
prints every sample as one JSON object per line: {"name", "labels", "value"}. Any syntax error
makes the parser raise, and the process exit non-zero. Used by tests/all/metrics.rs."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value}))
