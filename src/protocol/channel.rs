//! Channel names and what their prefix makes them (docs/protocol.md §3).
//!
//! Every decision that depends on a channel's kind is made here, from the parsed name: the rest of
//! the server asks a [`ChannelKind`] or a [`Channel`], never looks at a prefix itself.

/// Longest channel name Pusher accepts.
pub const MAX_CHANNEL_NAME_LEN: usize = 164;
/// Longest event name Pusher accepts.
pub const MAX_EVENT_NAME_LEN: usize = 200;
/// The prefix of a signed-in user's own channel; only the server makes these.
pub const USER_CHANNEL_PREFIX: &str = "#server-to-user-";
/// The prefix of the channel a user's watchers share; only the server makes and publishes to these.
pub const WATCHLIST_CHANNEL_PREFIX: &str = "#watchlist-";
/// Longest user id (sign-in `user_data.id`, presence `user_id`). A user channel is this plus its
/// prefix, so it may be longer than [`MAX_CHANNEL_NAME_LEN`]: every signed-in user can be sent to.
pub const MAX_USER_ID_LEN: usize = 200;

/// What a channel's prefix makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Public,
    Private,
    /// `private-encrypted-`: authorised like private; the server never looks inside the payload.
    PrivateEncrypted,
    Presence,
    /// `#server-to-user-{id}`: exists for `sendToUser`, cannot be subscribed to.
    User,
    /// `#watchlist-{id}`: the sockets watching a user hear of it coming online and going offline
    /// here. Neither clients nor the HTTP API can reach it; it carries only the server's own
    /// `pusher_internal:watchlist_events`, across nodes like any broadcast.
    Watchlist,
}

impl ChannelKind {
    /// Whether subscribing needs a signed `auth`.
    pub fn needs_auth(self) -> bool {
        matches!(self, ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence)
    }

    /// Whether clients may send `client-*` events to it. Not on `private-encrypted-` channels, as
    /// on Pusher: the payload would travel in plain text on a channel whose point is that it does not.
    pub fn accepts_client_events(self) -> bool {
        matches!(self, ChannelKind::Private | ChannelKind::Presence)
    }

    /// Whether its subscriber count is announced (`subscription_count`): presence channels count
    /// members instead, and user channels are not channels a client subscribed to.
    pub fn counts_subscriptions(self) -> bool {
        !matches!(self, ChannelKind::Presence | ChannelKind::User | ChannelKind::Watchlist)
    }

    /// Whether it is listed by the HTTP API and the dashboard (the server's own channels are not).
    pub fn is_listed(self) -> bool {
        !self.server_made()
    }

    /// Made by the server for a signed-in user, not subscribed to by a client: no occupancy,
    /// counts or webhooks.
    pub fn server_made(self) -> bool {
        matches!(self, ChannelKind::User | ChannelKind::Watchlist)
    }

    /// The kind of a name that was validated when it entered the server (a registry key, a name
    /// read back from the cluster's store): classified without validating again.
    pub fn of(name: &str) -> ChannelKind {
        if name.starts_with(USER_CHANNEL_PREFIX) {
            return ChannelKind::User;
        }
        if name.starts_with(WATCHLIST_CHANNEL_PREFIX) {
            return ChannelKind::Watchlist;
        }
        ChannelName::classify(name).kind
    }
}

/// The channel a signed-in user's connections share, `#server-to-user-{id}`.
pub fn user_channel(user_id: &str) -> String {
    format!("{USER_CHANNEL_PREFIX}{user_id}")
}

/// The channel of the sockets watching `user_id`, `#watchlist-{id}`.
pub fn watchlist_channel(user_id: &str) -> String {
    format!("{WATCHLIST_CHANNEL_PREFIX}{user_id}")
}

/// The user a `#server-to-user-{id}` name belongs to, if it is one.
pub fn user_of_channel(name: &str) -> Option<&str> {
    name.strip_prefix(USER_CHANNEL_PREFIX)
}

/// An owned, validated channel: what a broadcast carries, so that no layer parses the name again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    pub cache: bool,
}

impl Channel {
    /// Validates a name that may be published to (see [`ChannelName::parse_for_publish`]).
    pub fn parse(name: &str) -> Result<Channel, InvalidChannel> {
        ChannelName::parse_for_publish(name).map(|c| c.to_channel())
    }

    /// Validates a name read from another node's record: anything [`Channel::parse`] takes, plus
    /// the server's own `#watchlist-{id}` channels, which only a node publishes to.
    pub fn parse_from_peer(name: &str) -> Result<Channel, InvalidChannel> {
        match name.strip_prefix(WATCHLIST_CHANNEL_PREFIX) {
            Some(user) => {
                check_user_id(user)?;
                Ok(Channel { name: name.to_owned(), kind: ChannelKind::Watchlist, cache: false })
            }
            None => Channel::parse(name),
        }
    }

    /// The server's own channel of `user_id`'s watchers (the id was validated at sign-in).
    pub fn watchlist(user_id: &str) -> Channel {
        Channel { name: watchlist_channel(user_id), kind: ChannelKind::Watchlist, cache: false }
    }

    pub fn as_name(&self) -> ChannelName<'_> {
        ChannelName { name: &self.name, kind: self.kind, cache: self.cache }
    }
}

/// A validated channel name with its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelName<'a> {
    pub name: &'a str,
    pub kind: ChannelKind,
    /// `cache-` channels keep their last event for new subscribers.
    pub cache: bool,
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidChannel {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_NAME_LEN} characters")]
    TooLong,
    #[error("channel name may only contain A-Z, a-z, 0-9, _, -, =, @, ',', '.' and ';'")]
    BadCharacter,
}

impl<'a> ChannelName<'a> {
    /// Validates a name sent by a client or through the HTTP API.
    ///
    /// `#` is refused here: names with it are made by the server only.
    pub fn parse(name: &'a str) -> Result<Self, InvalidChannel> {
        if name.is_empty() {
            return Err(InvalidChannel::Empty);
        }
        if name.len() > MAX_CHANNEL_NAME_LEN {
            return Err(InvalidChannel::TooLong);
        }
        if !name.bytes().all(is_channel_char) {
            return Err(InvalidChannel::BadCharacter);
        }
        Ok(Self::classify(name))
    }

    /// Validates a name the HTTP API may publish to: as [`ChannelName::parse`], plus user channels
    /// (`#server-to-user-{id}`), which the SDKs' `sendToUser` publishes to.
    pub fn parse_for_publish(name: &'a str) -> Result<Self, InvalidChannel> {
        if let Some(user) = name.strip_prefix(USER_CHANNEL_PREFIX) {
            check_user_id(user)?;
            return Ok(ChannelName { name, kind: ChannelKind::User, cache: false });
        }
        Self::parse(name)
    }

    /// An owned copy, for a broadcast.
    pub fn to_channel(&self) -> Channel {
        Channel { name: self.name.to_owned(), kind: self.kind, cache: self.cache }
    }

    fn classify(name: &'a str) -> Self {
        // Longest prefixes first: `private-encrypted-` and `private-cache-` are also `private-`.
        const PREFIXES: &[(&str, ChannelKind, bool)] = &[
            ("private-encrypted-cache-", ChannelKind::PrivateEncrypted, true),
            ("private-encrypted-", ChannelKind::PrivateEncrypted, false),
            ("private-cache-", ChannelKind::Private, true),
            ("presence-cache-", ChannelKind::Presence, true),
            ("cache-", ChannelKind::Public, true),
            ("private-", ChannelKind::Private, false),
            ("presence-", ChannelKind::Presence, false),
        ];
        for (prefix, kind, cache) in PREFIXES {
            if name.starts_with(prefix) {
                return ChannelName { name, kind: *kind, cache: *cache };
            }
        }
        ChannelName { name, kind: ChannelKind::Public, cache: false }
    }
}

/// The user id part of a server-made channel name.
fn check_user_id(user: &str) -> Result<(), InvalidChannel> {
    if user.is_empty() {
        return Err(InvalidChannel::Empty);
    }
    if user.len() > MAX_USER_ID_LEN {
        return Err(InvalidChannel::TooLong);
    }
    if !user.bytes().all(is_channel_char) {
        return Err(InvalidChannel::BadCharacter);
    }
    Ok(())
}

pub fn is_channel_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

/// Why an event name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEventName {
    #[error("event name is empty")]
    Empty,
    #[error("event name is longer than {MAX_EVENT_NAME_LEN} characters")]
    TooLong,
}

/// Validates an event name: 1 to 200 characters.
pub fn validate_event_name(name: &str) -> Result<(), InvalidEventName> {
    if name.is_empty() {
        Err(InvalidEventName::Empty)
    } else if name.chars().count() > MAX_EVENT_NAME_LEN {
        Err(InvalidEventName::TooLong)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> (ChannelKind, bool) {
        let c = ChannelName::parse(name).unwrap();
        (c.kind, c.cache)
    }

    #[test]
    fn prefixes_decide_the_kind() {
        assert_eq!(kind("orders"), (ChannelKind::Public, false));
        assert_eq!(kind("private-orders"), (ChannelKind::Private, false));
        assert_eq!(kind("private-encrypted-x"), (ChannelKind::PrivateEncrypted, false));
        assert_eq!(kind("presence-room"), (ChannelKind::Presence, false));
        assert_eq!(kind("cache-prices"), (ChannelKind::Public, true));
        assert_eq!(kind("private-cache-x"), (ChannelKind::Private, true));
        assert_eq!(kind("presence-cache-x"), (ChannelKind::Presence, true));
        assert_eq!(kind("private-encrypted-cache-x"), (ChannelKind::PrivateEncrypted, true));
        // A prefix must be the whole prefix, not a look-alike.
        assert_eq!(kind("privateroom"), (ChannelKind::Public, false));
        assert_eq!(kind("presence"), (ChannelKind::Public, false));
    }

    #[test]
    fn names_are_validated() {
        assert!(ChannelName::parse("a-Z_0=@,.;").is_ok());
        assert_eq!(ChannelName::parse(""), Err(InvalidChannel::Empty));
        assert_eq!(ChannelName::parse(&"a".repeat(165)), Err(InvalidChannel::TooLong));
        // Every id sign-in accepts has a channel the API can publish to.
        let longest_user = format!("{USER_CHANNEL_PREFIX}{}", "u".repeat(MAX_USER_ID_LEN));
        assert_eq!(ChannelName::parse_for_publish(&longest_user).map(|c| c.kind), Ok(ChannelKind::User));
        let too_long = format!("{USER_CHANNEL_PREFIX}{}", "u".repeat(MAX_USER_ID_LEN + 1));
        assert_eq!(ChannelName::parse_for_publish(&too_long), Err(InvalidChannel::TooLong));
        assert!(ChannelName::parse(&"a".repeat(164)).is_ok());
        for bad in ["a b", "a/b", "a#b", "é", "a\u{0}", "#server-to-user-1", "a:b", "a*"] {
            assert_eq!(ChannelName::parse(bad), Err(InvalidChannel::BadCharacter), "{bad:?}");
        }
    }

    #[test]
    fn user_channels_only_for_publishing() {
        let c = ChannelName::parse_for_publish("#server-to-user-42").unwrap();
        assert_eq!(c.kind, ChannelKind::User);
        assert!(ChannelName::parse_for_publish("#server-to-user-").is_err());
        assert!(ChannelName::parse_for_publish("#server-to-user-a b").is_err());
        assert!(ChannelName::parse_for_publish("#other").is_err());
        assert!(ChannelName::parse("#server-to-user-42").is_err());
    }

    #[test]
    fn kind_decisions() {
        assert_eq!(ChannelKind::of("#server-to-user-7"), ChannelKind::User);
        assert_eq!(ChannelKind::of("presence-cache-x"), ChannelKind::Presence);
        assert_eq!(ChannelKind::of("orders"), ChannelKind::Public);
        assert!(!ChannelKind::Presence.counts_subscriptions() && !ChannelKind::User.counts_subscriptions());
        assert!(ChannelKind::Private.counts_subscriptions() && ChannelKind::Public.counts_subscriptions());
        assert!(!ChannelKind::Public.accepts_client_events() && !ChannelKind::User.accepts_client_events());
        assert!(!ChannelKind::PrivateEncrypted.accepts_client_events(), "plain text on an encrypted channel");
        assert!(ChannelKind::Private.accepts_client_events() && ChannelKind::Presence.accepts_client_events());
        assert!(!ChannelKind::User.is_listed() && ChannelKind::Presence.is_listed());
        assert_eq!(user_of_channel(&user_channel("42")), Some("42"));
        assert_eq!(user_of_channel("private-42"), None);
        let c = Channel::parse("private-cache-x").unwrap();
        assert_eq!((c.kind, c.cache, c.as_name().name), (ChannelKind::Private, true, "private-cache-x"));
        assert!(Channel::parse("a b").is_err());
        assert_eq!(Channel::parse("#server-to-user-9").unwrap().kind, ChannelKind::User);
    }

    #[test]
    fn watchlist_channels_come_only_from_the_server_and_its_peers() {
        assert!(ChannelName::parse("#watchlist-7").is_err(), "a client cannot subscribe to one");
        assert!(Channel::parse("#watchlist-7").is_err(), "the HTTP API cannot publish to one");
        let c = Channel::parse_from_peer("#watchlist-7").unwrap();
        assert_eq!(c, Channel::watchlist("7"));
        assert_eq!(ChannelKind::of("#watchlist-7"), ChannelKind::Watchlist);
        assert!(Channel::parse_from_peer("#watchlist-").is_err());
        assert!(Channel::parse_from_peer("#watchlist-a b").is_err());
        assert_eq!(Channel::parse_from_peer("orders").map(|c| c.kind), Ok(ChannelKind::Public));
        let k = ChannelKind::Watchlist;
        assert!(k.server_made() && !k.is_listed() && !k.counts_subscriptions() && !k.accepts_client_events());
    }

    #[test]
    fn event_names_are_bounded() {
        assert!(validate_event_name("order.shipped").is_ok());
        assert_eq!(validate_event_name(""), Err(InvalidEventName::Empty));
        assert!(validate_event_name(&"é".repeat(200)).is_ok());
        assert_eq!(validate_event_name(&"e".repeat(201)), Err(InvalidEventName::TooLong));
    }
}
