//! Webhook events as Pusher sends them (docs/protocol.md §8), and which webhook wants which.

use serde_json::{json, Value};

use crate::config::WebhookConfig;

/// One thing that happened, for the application to react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    ChannelOccupied { channel: String },
    ChannelVacated { channel: String },
    MemberAdded { channel: String, user_id: String },
    MemberRemoved { channel: String, user_id: String },
    ClientEvent { channel: String, event: String, data: String, socket_id: String, user_id: Option<String> },
    CacheMiss { channel: String },
    SubscriptionCount { channel: String, count: usize },
}

impl WebhookEvent {
    /// The `name` Pusher gives the event (and `event_types` lists).
    pub fn name(&self) -> &'static str {
        match self {
            WebhookEvent::ChannelOccupied { .. } => "channel_occupied",
            WebhookEvent::ChannelVacated { .. } => "channel_vacated",
            WebhookEvent::MemberAdded { .. } => "member_added",
            WebhookEvent::MemberRemoved { .. } => "member_removed",
            WebhookEvent::ClientEvent { .. } => "client_event",
            WebhookEvent::CacheMiss { .. } => "cache_miss",
            WebhookEvent::SubscriptionCount { .. } => "subscription_count",
        }
    }

    pub fn channel(&self) -> &str {
        match self {
            WebhookEvent::ChannelOccupied { channel }
            | WebhookEvent::ChannelVacated { channel }
            | WebhookEvent::MemberAdded { channel, .. }
            | WebhookEvent::MemberRemoved { channel, .. }
            | WebhookEvent::ClientEvent { channel, .. }
            | WebhookEvent::CacheMiss { channel }
            | WebhookEvent::SubscriptionCount { channel, .. } => channel,
        }
    }

    /// The event's JSON object in a webhook body.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "name": self.name(), "channel": self.channel() });
        match self {
            WebhookEvent::MemberAdded { user_id, .. } | WebhookEvent::MemberRemoved { user_id, .. } => {
                v["user_id"] = user_id.clone().into();
            }
            WebhookEvent::ClientEvent { event, data, socket_id, user_id, .. } => {
                v["event"] = event.clone().into();
                v["data"] = data.clone().into();
                v["socket_id"] = socket_id.clone().into();
                if let Some(user_id) = user_id {
                    v["user_id"] = user_id.clone().into();
                }
            }
            WebhookEvent::SubscriptionCount { count, .. } => {
                v["subscription_count"] = (*count).into();
            }
            _ => {}
        }
        v
    }
}

/// Whether `webhook` wants `event`: its `event_types` (all when empty) and channel-name filter.
pub fn wants(webhook: &WebhookConfig, event: &WebhookEvent) -> bool {
    if !webhook.event_types.is_empty() && !webhook.event_types.iter().any(|t| t == event.name()) {
        return false;
    }
    let channel = event.channel();
    if let Some(filter) = &webhook.filter {
        if filter.channel_name_starts_with.as_ref().is_some_and(|p| !channel.starts_with(p.as_str())) {
            return false;
        }
        if filter.channel_name_ends_with.as_ref().is_some_and(|s| !channel.ends_with(s.as_str())) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookFilter;

    #[test]
    fn json_shapes() {
        let e = WebhookEvent::MemberAdded { channel: "presence-c".into(), user_id: "7".into() };
        assert_eq!(e.to_json(), json!({"name": "member_added", "channel": "presence-c", "user_id": "7"}));
        let e = WebhookEvent::ClientEvent {
            channel: "private-c".into(),
            event: "client-x".into(),
            data: "{\"a\":1}".into(),
            socket_id: "1.2".into(),
            user_id: None,
        };
        assert_eq!(
            e.to_json(),
            json!({"name": "client_event", "channel": "private-c", "event": "client-x", "data": "{\"a\":1}", "socket_id": "1.2"})
        );
        let e = WebhookEvent::SubscriptionCount { channel: "c".into(), count: 3 };
        assert_eq!(e.to_json()["subscription_count"], 3);
    }

    #[test]
    fn event_types_and_filters() {
        let mut hook = WebhookConfig { url: "http://x".into(), event_types: vec![], filter: None };
        let occupied = WebhookEvent::ChannelOccupied { channel: "private-orders".into() };
        assert!(wants(&hook, &occupied), "no event_types: everything");
        hook.event_types = vec!["channel_vacated".into()];
        assert!(!wants(&hook, &occupied));
        hook.event_types = vec!["channel_occupied".into()];
        hook.filter =
            Some(WebhookFilter { channel_name_starts_with: Some("private-".into()), channel_name_ends_with: None });
        assert!(wants(&hook, &occupied));
        hook.filter =
            Some(WebhookFilter { channel_name_starts_with: None, channel_name_ends_with: Some("-eu".into()) });
        assert!(!wants(&hook, &occupied));
    }
}
