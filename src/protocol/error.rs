//! Pusher error codes, in one place, so a refusal means the same thing on every path.
//!
//! The same number is used as the `code` of a `pusher:error` message and as the WebSocket close code,
//! because pusher-js decides whether to reconnect from the close code's range (see docs/protocol.md §2).

/// A Pusher protocol error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 4001: no app has the key in the URL.
    AppNotFound,
    /// 4003: the app exists but is disabled.
    AppDisabled,
    /// 4004: the app is at its connection quota.
    OverConnectionQuota,
    /// 4005: the path is not a Pusher endpoint.
    PathNotFound,
    /// 4006: the protocol version is not a number.
    InvalidVersionFormat,
    /// 4007: the protocol version is not one we speak.
    UnsupportedProtocolVersion,
    /// 4008: no protocol version was given.
    NoProtocolVersion,
    /// 4009: the connection is not authorised (Origin refused, bad auth).
    Unauthorized,
    /// 4100: the client cannot keep up (slow consumer) or the server is over capacity.
    OverCapacity,
    /// 4200: generic reconnect-now code: server restart, invalid message.
    Generic,
    /// 4201: the client did not answer our ping in time.
    PongNotReceived,
    /// 4202: closed for inactivity.
    ClosedForInactivity,
    /// 4301: a client event was refused (not allowed, rate limited).
    ClientEventRejected,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::AppNotFound => 4001,
            ErrorCode::AppDisabled => 4003,
            ErrorCode::OverConnectionQuota => 4004,
            ErrorCode::PathNotFound => 4005,
            ErrorCode::InvalidVersionFormat => 4006,
            ErrorCode::UnsupportedProtocolVersion => 4007,
            ErrorCode::NoProtocolVersion => 4008,
            ErrorCode::Unauthorized => 4009,
            ErrorCode::OverCapacity => 4100,
            ErrorCode::Generic => 4200,
            ErrorCode::PongNotReceived => 4201,
            ErrorCode::ClosedForInactivity => 4202,
            ErrorCode::ClientEventRejected => 4301,
        }
    }

    /// The default human-readable message for the code.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::AppNotFound => "Application does not exist",
            ErrorCode::AppDisabled => "Application is disabled",
            ErrorCode::OverConnectionQuota => "Application is over connection quota",
            ErrorCode::PathNotFound => "Path not found",
            ErrorCode::InvalidVersionFormat => "Invalid version string format",
            ErrorCode::UnsupportedProtocolVersion => "Unsupported protocol version",
            ErrorCode::NoProtocolVersion => "No protocol version supplied",
            ErrorCode::Unauthorized => "Connection is unauthorized",
            ErrorCode::OverCapacity => "Over capacity",
            ErrorCode::Generic => "Generic reconnect immediately",
            ErrorCode::PongNotReceived => "Pong reply not received",
            ErrorCode::ClosedForInactivity => "Closed after inactivity",
            ErrorCode::ClientEventRejected => "Client event rejected",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fall_in_the_ranges_pusher_js_reconnects_by() {
        // 4000-4099: do not reconnect; 4100-4199: back off; 4200-4299: reconnect now.
        assert!((4000..4100).contains(&ErrorCode::AppNotFound.code()));
        assert!((4000..4100).contains(&ErrorCode::Unauthorized.code()));
        assert!((4100..4200).contains(&ErrorCode::OverCapacity.code()));
        assert!((4200..4300).contains(&ErrorCode::PongNotReceived.code()));
        assert_eq!(ErrorCode::ClientEventRejected.code(), 4301);
    }
}
