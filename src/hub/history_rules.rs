//! Which channels keep a history: an app's `[[apps.history]]` rules, matched by name pattern.
//!
//! Checked on every publish, so a channel no rule names costs one pass over an app's (few, capped)
//! rules and nothing else; an app with no rules costs an empty-slice check.

use crate::config::{AppConfig, HistoryRule};

/// The first rule whose pattern matches `channel`, if any. Server-made channels (`#...`) never
/// keep history: no rule's pattern can name them.
pub fn rule_for<'a>(app: &'a AppConfig, channel: &str) -> Option<&'a HistoryRule> {
    if app.history.is_empty() || channel.starts_with('#') {
        return None;
    }
    app.history.iter().find(|rule| matches(&rule.channels, channel))
}

/// Glob matching where `*` is any run of characters (possibly none), everything else literal.
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else { return false };
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stands_for_any_run_of_characters() {
        assert!(matches("chat-*", "chat-lobby"));
        assert!(matches("chat-*", "chat-"));
        assert!(!matches("chat-*", "private-chat-lobby"));
        assert!(matches("*", "anything"));
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "orders-2"));
        assert!(matches("*-room-*-log", "private-room-a-log"));
        assert!(!matches("*-room-*-log", "private-room-a-logs"));
        assert!(matches("a*a", "aa"));
        assert!(!matches("a*a", "a"), "the two literal ends may not overlap");
    }

    #[test]
    fn the_first_matching_rule_wins_and_server_channels_never_match() {
        let mut app = AppConfig::new("1", "k", "s");
        assert!(rule_for(&app, "chat-x").is_none());
        let rule = |channels: &str, size| HistoryRule { channels: channels.into(), size, ttl_s: 60 };
        app.history = vec![rule("chat-vip", 5), rule("chat-*", 10), rule("*", 1)];
        assert_eq!(rule_for(&app, "chat-vip").map(|r| r.size), Some(5));
        assert_eq!(rule_for(&app, "chat-x").map(|r| r.size), Some(10));
        assert_eq!(rule_for(&app, "orders").map(|r| r.size), Some(1));
        assert!(rule_for(&app, "#server-to-user-1").is_none());
    }
}
