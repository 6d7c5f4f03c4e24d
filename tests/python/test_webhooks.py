"""Webhooks Herald really sends, checked with the official SDK's `validate_webhook`."""

import hashlib
import hmac
import json


def occupied(channel):
    return lambda body: any(e.get("name") == "channel_occupied" and e.get("channel") == channel for e in body["events"])


def test_a_real_webhook_passes_validate_webhook(hooked_herald, hooks):
    client = hooked_herald.pysher()
    try:
        client.wait_connected()
        client.subscribe("py-hooked")
        headers, body = hooks.next_with(occupied("py-hooked"))
        sdk = hooked_herald.sdk()
        validated = sdk.validate_webhook(headers["X-Pusher-Key"], headers["X-Pusher-Signature"], body)
        assert validated is not None, "the SDK accepted Herald's signature"
        assert {"name": "channel_occupied", "channel": "py-hooked"} in validated["events"]
        assert isinstance(validated["time_ms"], int)
    finally:
        client.disconnect()


def test_presence_and_client_event_webhooks_are_signed_too(hooked_herald, hooks):
    ada = hooked_herald.pysher(user_data={"user_id": "ada"})
    bob = hooked_herald.pysher(user_data={"user_id": "bob"})
    try:
        ada.wait_connected()
        bob.wait_connected()
        room, _ = ada.subscribe("presence-py-hooked")
        bob.subscribe("presence-py-hooked")
        room.trigger("client-wave", {"hi": True})
        headers, body = hooks.next_with(lambda b: any(e.get("name") == "client_event" for e in b["events"]))
        validated = hooked_herald.sdk().validate_webhook(headers["X-Pusher-Key"], headers["X-Pusher-Signature"], body)
        event = next(e for e in validated["events"] if e["name"] == "client_event")
        assert (event["channel"], event["event"], event["user_id"]) == ("presence-py-hooked", "client-wave", "ada")
        assert json.loads(event["data"]) == {"hi": True}
    finally:
        ada.disconnect()
        bob.disconnect()


def test_tampered_or_foreign_webhooks_are_rejected(hooked_herald, hooks):
    client = hooked_herald.pysher()
    try:
        client.wait_connected()
        client.subscribe("py-hooked-tamper")
        headers, body = hooks.next_with(occupied("py-hooked-tamper"))
    finally:
        client.disconnect()
    key, signature = headers["X-Pusher-Key"], headers["X-Pusher-Signature"]
    sdk = hooked_herald.sdk()
    assert sdk.validate_webhook(key, signature, body) is not None, "control: the genuine one passes"

    tampered = body.replace(b"py-hooked-tamper", b"py-hooked-tampeR")
    assert tampered != body
    assert sdk.validate_webhook(key, signature, tampered) is None
    assert sdk.validate_webhook("another-key", signature, body) is None
    forged = hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    assert sdk.validate_webhook(key, forged, body) is None
    assert hooked_herald.sdk(secret="another-secret").validate_webhook(key, signature, body) is None
