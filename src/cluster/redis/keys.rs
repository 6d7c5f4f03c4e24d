//! Every Redis key Herald uses, in one place.
//!
//! Keys that a script touches together share a hash tag (`{app:channel}` or `{app}`), so they live
//! in one hash slot and the scripts also run on a Redis Cluster. Everything starts with the
//! configured prefix, so several deployments can share one Redis.

pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_owned() }
    }

    /// The pub/sub channel the nodes' records travel on.
    pub fn bus(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// A presence channel's `[refs, members, counts]`: which node holds which user, each user's
    /// `user_info`, and how many nodes hold each user.
    pub fn presence(&self, app_id: &str, channel: &str) -> [String; 3] {
        let tag = format!("{{{app_id}:{channel}}}");
        [self.key(&format!("{tag}:refs")), self.key(&format!("{tag}:members")), self.key(&format!("{tag}:counts"))]
    }

    /// An app's `[holders, counts]` of occupied channels: which node holds which channel, and how
    /// many nodes hold each.
    pub fn occupancy(&self, app_id: &str) -> [String; 2] {
        [self.key(&format!("{{{app_id}}}:occ:holders")), self.key(&format!("{{{app_id}}}:occ:counts"))]
    }

    /// One node's subscriber count per channel of an app.
    pub fn subscriptions(&self, app_id: &str, node: u32) -> String {
        self.key(&format!("{{{app_id}}}:subs:{node}"))
    }

    /// The last event of a cache channel, as its frame's bytes.
    pub fn cache(&self, app_id: &str, channel: &str) -> String {
        self.key(&format!("{{{app_id}}}:cache:{channel}"))
    }

    /// One node's connection count per app.
    /// A history channel's Redis Stream. Every history stream of an app shares the `{app}` tag,
    /// so one script can append a batch's events of that app on a Redis Cluster too.
    pub fn history(&self, app_id: &str, channel: &str) -> String {
        self.key(&format!("{{{app_id}}}:hist:{channel}"))
    }

    pub fn connections(&self, node: u32) -> String {
        self.key(&format!("conns:{node}"))
    }

    /// The presence members a node holds (`app\tchannel\tuser`), for the reaper.
    pub fn node_presence(&self, node: u32) -> String {
        self.key(&format!("node:{node}:presence"))
    }

    /// The channels a node holds (`app\tchannel`), for the reaper.
    pub fn node_occupancy(&self, node: u32) -> String {
        self.key(&format!("node:{node}:occ"))
    }

    /// Which node's URL serves an HTTP fallback session (`app key/server/session`).
    pub fn http_session(&self, session: &str) -> String {
        self.key(&format!("xhr:{session}"))
    }

    /// Live nodes, scored by their last heartbeat (ms since the epoch).
    pub fn nodes(&self) -> String {
        self.key("nodes")
    }

    /// A single-use claim (an SSE ticket's id), set once by whichever node redeems it first.
    pub fn claim(&self, key: &str) -> String {
        self.key(&format!("claim:{key}"))
    }

    /// Taken by the one node that reaps a dead `node`.
    pub fn reap_lock(&self, node: u32) -> String {
        self.key(&format!("reap:{node}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_grouped_by_hash_tag() {
        let k = Keys::new("herald");
        assert_eq!(k.bus(), "herald");
        assert_eq!(
            k.presence("1", "presence-r"),
            ["herald:{1:presence-r}:refs", "herald:{1:presence-r}:members", "herald:{1:presence-r}:counts"]
        );
        assert_eq!(k.occupancy("1"), ["herald:{1}:occ:holders", "herald:{1}:occ:counts"]);
        assert_eq!(k.subscriptions("1", 7), "herald:{1}:subs:7");
        assert_eq!(k.connections(7), "herald:conns:7");
        assert_eq!(k.node_presence(7), "herald:node:7:presence");
        assert_eq!(k.node_occupancy(7), "herald:node:7:occ");
        assert_eq!(k.nodes(), "herald:nodes");
        assert_eq!(k.reap_lock(7), "herald:reap:7");
        assert_eq!(k.claim("1:abc"), "herald:claim:1:abc");
        assert_eq!(k.cache("1", "cache-x"), "herald:{1}:cache:cache-x");
    }
}
