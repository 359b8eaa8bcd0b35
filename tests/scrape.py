"""Test helpers: GET /metrics or /healthz from a monitoring server, and read one sample."""
import http.client
import json

from prometheus_client.parser import text_string_to_metric_families


def get(address, path, timeout=5.0):
    """(status, content type, body text) of one GET."""
    conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read().decode("utf-8")
    finally:
        conn.close()


def health(address):
    """(status, JSON body) of /healthz."""
    status, content_type, body = get(address, "/healthz")
    assert content_type == "application/json"
    return status, json.loads(body)


def samples(text):
    """{(sample name, sorted label items): value} of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text, name, default=None, **labels):
    """One sample's value (``default`` when absent)."""
    return samples(text).get((name, tuple(sorted(labels.items()))), default)


def metrics(address):
    status, content_type, body = get(address, "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    return body
