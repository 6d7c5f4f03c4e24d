"""The `pysher` client (Pusher protocol 6) against a real Herald: connect, public, private and
presence channels, events from the official SDK, and client events between two pysher clients."""

import json
import queue

from harness import WAIT


def test_connects_with_protocol_6(herald):
    client = herald.pysher()
    try:
        assert "protocol=6" in client.client.url
        socket_id = client.wait_connected()
        a, b = socket_id.split(".")
        assert a.isdigit() and b.isdigit()
    finally:
        client.disconnect()


def test_an_unknown_key_is_refused_with_4001(herald):
    client = herald.pysher(key="no-such-key")
    try:
        error = client.errors.get(timeout=WAIT)
        assert error["code"] == 4001, error
        assert not client.connected.is_set()
    finally:
        client.disconnect()


def test_public_channel_receives_sdk_events_through_bind(herald):
    client = herald.pysher()
    try:
        client.wait_connected()
        channel, _ = client.subscribe("py-pysher-news")
        received = queue.Queue()
        channel.bind("headline", received.put)
        herald.sdk().trigger("py-pysher-news", "headline", {"title": "Herald speaks protocol 6"})
        assert json.loads(received.get(timeout=WAIT)) == {"title": "Herald speaks protocol 6"}
    finally:
        client.disconnect()


def test_private_channel_needs_the_right_secret(herald):
    good, bad = herald.pysher(), herald.pysher(secret="not-the-secret")
    try:
        good.wait_connected()
        bad.wait_connected()
        good.subscribe("private-py-pysher")
        _, error = bad.subscribe("private-py-pysher", expect="pusher:subscription_error")
        assert error["status"] == 401, error
        herald.sdk().trigger("private-py-pysher", "secret", "for members")
        assert good.next_on("private-py-pysher") == ("secret", "for members")
        assert herald.sdk().channel_info("private-py-pysher", ["subscription_count"])["subscription_count"] == 1
    finally:
        good.disconnect()
        bad.disconnect()


def test_presence_members_and_client_events(herald):
    ada = herald.pysher(user_data={"user_id": "ada", "user_info": {"name": "Ada"}})
    bob = herald.pysher(user_data={"user_id": "bob", "user_info": {"name": "Bob"}})
    try:
        ada.wait_connected()
        bob.wait_connected()
        room, data = ada.subscribe("presence-py-pysher")
        assert json.loads(data)["presence"]["ids"] == ["ada"]
        bob_room, data = bob.subscribe("presence-py-pysher")
        assert sorted(json.loads(data)["presence"]["ids"]) == ["ada", "bob"]
        added = json.loads(ada.expect("pusher_internal:member_added", "presence-py-pysher"))
        assert added == {"user_id": "bob", "user_info": {"name": "Bob"}}

        # A client event reaches the other member, never the sender.
        bob_room.trigger("client-typing", {"typing": True})
        assert ada.next_on("presence-py-pysher") == ("client-typing", {"typing": True})
        room.trigger("client-reply", {"text": "hi"})
        assert bob.next_on("presence-py-pysher") == ("client-reply", {"text": "hi"})
        herald.sdk().trigger("presence-py-pysher", "sentinel", "x")
        assert bob.next_on("presence-py-pysher")[0] == "sentinel", "bob's own client-typing was not echoed"

        bob.disconnect()
        removed = json.loads(ada.expect("pusher_internal:member_removed", "presence-py-pysher"))
        assert removed == {"user_id": "bob"}
    finally:
        ada.disconnect()
        bob.disconnect()


def test_client_events_on_a_channel_the_sender_did_not_join_are_refused(herald):
    member, outsider = herald.pysher(), herald.pysher()
    try:
        member.wait_connected()
        outsider.wait_connected()
        member.subscribe("private-py-pysher-club")
        # pysher's Channel.trigger sends on any channel object; the server must refuse it.
        outsider.client.connection.send_event("client-intrude", {"x": 1}, channel_name="private-py-pysher-club")
        error = outsider.errors.get(timeout=WAIT)
        assert error["code"] == 4301, error
        herald.sdk().trigger("private-py-pysher-club", "sentinel", "x")
        assert member.next_on("private-py-pysher-club")[0] == "sentinel"
    finally:
        member.disconnect()
        outsider.disconnect()
