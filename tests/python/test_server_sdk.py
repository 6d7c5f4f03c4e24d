"""The official Python server SDK (`pusher` on PyPI) against a real Herald: publishing, queries,
authorisation, users and end-to-end encryption, each received by a real WebSocket client."""

import base64
import json

import nacl.secret
import pytest
from pusher.errors import PusherBadAuth, PusherBadRequest, PusherBadStatus

from harness import MASTER_KEY_B64, SECRET


def test_trigger_reaches_subscribers_of_each_channel(herald):
    a, b = herald.raw(), herald.raw()
    a.subscribe("py-trigger-a")
    b.subscribe("py-trigger-b")
    assert herald.sdk().trigger(["py-trigger-a", "py-trigger-b"], "order.shipped", {"id": 42}) == {}
    for client, channel in ((a, "py-trigger-a"), (b, "py-trigger-b")):
        got = client.next_on(channel)
        assert got["event"] == "order.shipped"
        assert json.loads(got["data"]) == {"id": 42}


def test_trigger_with_socket_id_skips_that_connection(herald):
    sender, other = herald.raw(), herald.raw()
    sender.subscribe("py-exclude")
    other.subscribe("py-exclude")
    sdk = herald.sdk()
    sdk.trigger("py-exclude", "echo", "not for the sender", socket_id=sender.socket_id)
    sdk.trigger("py-exclude", "sentinel", "for everyone")
    assert other.next_on("py-exclude")["event"] == "echo"
    assert other.next_on("py-exclude")["event"] == "sentinel"
    # The sender's next event on the channel is the sentinel: the excluded one never came.
    assert sender.next_on("py-exclude")["event"] == "sentinel"


def test_a_wrong_secret_is_refused_with_401_and_publishes_nothing(herald):
    c = herald.raw()
    c.subscribe("py-guarded")
    with pytest.raises(PusherBadAuth):
        herald.sdk(secret="not-the-secret").trigger("py-guarded", "forged", "x")
    with pytest.raises(PusherBadAuth):
        herald.sdk(key="not-the-key").trigger("py-guarded", "forged", "x")
    with pytest.raises(PusherBadStatus, match="404"):
        herald.sdk(app_id="999").trigger("py-guarded", "forged", "x")
    herald.sdk().trigger("py-guarded", "sentinel", "x")
    assert c.next_on("py-guarded")["event"] == "sentinel"


def test_data_over_the_apps_limit_is_refused_with_413(herald):
    c = herald.raw()
    c.subscribe("py-large")
    # The SDK allows 30 KB; the app allows max_message_size (10,000 bytes by default).
    with pytest.raises(PusherBadStatus, match="413"):
        herald.sdk().trigger("py-large", "big", "z" * 20000)
    herald.sdk().trigger("py-large", "sentinel", "x")
    assert c.next_on("py-large")["event"] == "sentinel"


def test_trigger_batch_publishes_in_order_and_refuses_a_batch_too_large_whole(herald):
    a, b = herald.raw(), herald.raw()
    a.subscribe("py-batch-a")
    b.subscribe("py-batch-b")
    sdk = herald.sdk()
    batch = [
        {"channel": "py-batch-a", "name": "first", "data": {"n": 1}},
        {"channel": "py-batch-b", "name": "second", "data": "two"},
        {"channel": "py-batch-a", "name": "third", "data": {"n": 3}},
    ]
    reply = sdk.trigger_batch(batch)
    assert reply == {"batch": [{}, {}, {}]}
    assert [a.next_on("py-batch-a")["event"] for _ in range(2)] == ["first", "third"]
    got = b.next_on("py-batch-b")
    assert (got["event"], got["data"]) == ("second", "two")

    eleven = [{"channel": "py-batch-a", "name": f"e{i}", "data": "x"} for i in range(11)]
    with pytest.raises(PusherBadRequest):
        sdk.trigger_batch(eleven)
    sdk.trigger("py-batch-a", "sentinel", "x")
    assert a.next_on("py-batch-a")["event"] == "sentinel", "no event of the refused batch was published"


def test_channel_info_channels_list_and_users(herald):
    one, two = herald.raw(), herald.raw()
    one.subscribe("py-info-orders")
    two.subscribe("py-info-orders")
    sdk = herald.sdk()
    member = herald.raw()
    auth = sdk.authenticate("presence-py-info", member.socket_id, {"user_id": "7", "user_info": {"name": "Ada"}})
    assert member.subscribe("presence-py-info", **auth)["event"] == "pusher_internal:subscription_succeeded"

    assert sdk.channel_info("py-info-orders", ["subscription_count"]) == {"occupied": True, "subscription_count": 2}
    assert sdk.channel_info("py-info-nobody") == {"occupied": False}
    assert sdk.channels_info("py-info-", ["subscription_count"]) == {
        "channels": {"py-info-orders": {"subscription_count": 2}}
    }
    assert sdk.channels_info("presence-py-info", ["user_count"]) == {"channels": {"presence-py-info": {"user_count": 1}}}
    assert sdk.channel_info("presence-py-info", ["user_count"])["user_count"] == 1
    assert sdk.users_info("presence-py-info") == {"users": [{"id": "7"}]}

    # Refusals the SDK surfaces: user_count and users only exist for presence channels.
    with pytest.raises(PusherBadRequest):
        sdk.channel_info("py-info-orders", ["user_count"])
    with pytest.raises(PusherBadRequest):
        sdk.channels_info("py-info-", ["user_count"])
    with pytest.raises(PusherBadRequest):
        sdk.users_info("py-info-orders")
    with pytest.raises(PusherBadAuth):
        herald.sdk(secret="wrong").channels_info()


def test_authenticate_signs_private_subscriptions_and_a_wrong_signature_is_refused(herald):
    c = herald.raw()
    auth = herald.sdk().authenticate("private-py-auth", c.socket_id)
    assert c.subscribe("private-py-auth", **auth)["event"] == "pusher_internal:subscription_succeeded"

    d = herald.raw()
    for bad in (
        herald.sdk(secret="wrong").authenticate("private-py-auth", d.socket_id),
        herald.sdk().authenticate("private-py-auth", c.socket_id),  # another socket's signature
        herald.sdk().authenticate("private-py-other", d.socket_id),  # another channel's
    ):
        reply = d.subscribe("private-py-auth", **bad)
        assert reply["event"] == "pusher:subscription_error", reply
    herald.sdk().trigger("private-py-auth", "secret", "only for c")
    assert c.next_on("private-py-auth")["event"] == "secret"


def test_authenticate_presence_members_see_each_other(herald):
    sdk = herald.sdk()
    ada, bob = herald.raw(), herald.raw()
    joined = ada.subscribe("presence-py-room", **sdk.authenticate("presence-py-room", ada.socket_id, {"user_id": "ada"}))
    assert json.loads(joined["data"])["presence"]["ids"] == ["ada"]
    bob_auth = sdk.authenticate("presence-py-room", bob.socket_id, {"user_id": "bob", "user_info": {"name": "Bob"}})
    joined = bob.subscribe("presence-py-room", **bob_auth)
    presence = json.loads(joined["data"])["presence"]
    assert sorted(presence["ids"]) == ["ada", "bob"] and presence["count"] == 2
    added = ada.expect("pusher_internal:member_added", "presence-py-room")
    assert json.loads(added["data"]) == {"user_id": "bob", "user_info": {"name": "Bob"}}
    # channel_data that the signature does not cover is refused.
    eve = herald.raw()
    forged = dict(sdk.authenticate("presence-py-room", eve.socket_id, {"user_id": "eve"}))
    forged["channel_data"] = json.dumps({"user_id": "admin"})
    assert eve.subscribe("presence-py-room", **forged)["event"] == "pusher:subscription_error"


def test_authenticate_user_send_to_user_and_terminate_user_connections(herald):
    sdk = herald.sdk()
    tabs = [herald.raw(), herald.raw()]
    for tab in tabs:
        tab.send("pusher:signin", sdk.authenticate_user(tab.socket_id, {"id": "42", "name": "Ada"}))
        tab.expect("pusher:signin_success")
    stranger = herald.raw()
    stranger.send("pusher:signin", sdk.authenticate_user(stranger.socket_id, {"id": "43"}))
    stranger.expect("pusher:signin_success")

    # A forged user_data (the signature covers another) is refused.
    forger = herald.raw()
    signed = sdk.authenticate_user(forger.socket_id, {"id": "44"})
    forger.send("pusher:signin", {"auth": signed["auth"], "user_data": json.dumps({"id": "42"})})
    error = forger.expect("pusher:error")
    assert error["data"]["code"] == 4009, error

    sdk.send_to_user("42", "note", {"text": "hello"})
    sdk.send_to_user("43", "sentinel", "x")
    for tab in tabs:
        got = tab.next_on("#server-to-user-42")
        assert (got["event"], json.loads(got["data"])) == ("note", {"text": "hello"})
    assert stranger.next_on("#server-to-user-43")["event"] == "sentinel", "user 43 got nothing meant for 42"

    # Terminate: a wrong secret is refused and closes nothing; the SDK's path (no /apps/{id}) works.
    with pytest.raises(PusherBadAuth):
        herald.sdk(secret="wrong").terminate_user_connections("42")
    assert sdk.terminate_user_connections("42") == {}
    for tab in tabs:
        assert tab.closed_with() == 4009
    stranger.send("pusher:ping", {})
    assert stranger.expect("pusher:pong")["event"] == "pusher:pong", "other users stay connected"


def test_end_to_end_encrypted_channels(herald):
    sdk = herald.sdk(encryption_master_key_base64=MASTER_KEY_B64)
    c = herald.raw()
    auth = sdk.authenticate("private-encrypted-py-vault", c.socket_id)
    assert "shared_secret" in auth
    assert c.subscribe("private-encrypted-py-vault", auth=auth["auth"])["event"] == (
        "pusher_internal:subscription_succeeded"
    )
    sdk.trigger("private-encrypted-py-vault", "secret", {"pin": "1234"})
    got = c.next_on("private-encrypted-py-vault")
    assert got["event"] == "secret"
    envelope = json.loads(got["data"])
    assert "1234" not in got["data"], "the server only ever sees ciphertext"
    box = nacl.secret.SecretBox(base64.b64decode(auth["shared_secret"]))
    plain = box.decrypt(base64.b64decode(envelope["ciphertext"]), base64.b64decode(envelope["nonce"]))
    assert json.loads(plain) == {"pin": "1234"}

    # Client events would be plain text on an encrypted channel: refused with 4301, relayed to nobody.
    other = herald.raw()
    other.subscribe("private-encrypted-py-vault", auth=sdk.authenticate("private-encrypted-py-vault", other.socket_id)["auth"])
    c.send("client-leak", {"pin": "plain"}, channel="private-encrypted-py-vault")
    assert c.expect("pusher:error")["data"]["code"] == 4301
    sdk.trigger("private-encrypted-py-vault", "sentinel", "x")
    assert other.next_on("private-encrypted-py-vault")["event"] == "sentinel"

