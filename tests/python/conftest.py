"""Fixtures: one real Herald per test module (started from HERALD_BIN with a temp config)."""

import pytest

from harness import Herald, WebhookReceiver


@pytest.fixture(scope="module")
def herald():
    server = Herald(app={"webhook_batch_ms": 50})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hooks():
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def hooked_herald(hooks):
    """A server that sends every webhook to `hooks` at once (no batching window, no vacate delay)."""
    server = Herald(app={"webhook_batch_ms": 20, "webhook_delay_ms": 0}, webhooks=[{"url": hooks.url}])
    yield server
    server.stop()
