//! Presence in one process: who is in each presence channel, counted per node.
//!
//! The store hears only of a user's first and last socket on a node (the registry counts tabs),
//! so "first in the cluster" and "gone from the cluster" fall out of a reference count per user.
//! The Redis state keeps the same shape in Redis hashes, with one reference per node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::protocol::presence::MemberData;

/// A member: user id and the raw JSON of its `user_info`.
pub type Member = (String, Option<String>);

/// The result of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// `first` when the user was in the channel nowhere before; `members` includes the user.
    Joined { first: bool, members: Vec<Member> },
    /// The channel is at its member cap and the user is not in it.
    Full,
}

/// A channel's users: user id -> (node references, user_info).
type Users = BTreeMap<String, (usize, Option<String>)>;

#[derive(Default)]
pub struct MemoryPresence {
    /// (app, channel) -> its users.
    channels: Mutex<HashMap<(String, String), Users>>,
}

impl MemoryPresence {
    pub fn join(&self, app_id: &str, channel: &str, member: &MemberData, max_members: usize) -> Join {
        let Ok(mut channels) = self.channels.lock() else { return Join::Full };
        let users = channels.entry((app_id.to_owned(), channel.to_owned())).or_default();
        let first = !users.contains_key(&member.user_id);
        if first && users.len() >= max_members {
            if users.is_empty() {
                channels.remove(&(app_id.to_owned(), channel.to_owned()));
            }
            return Join::Full;
        }
        let entry = users.entry(member.user_id.clone()).or_insert((0, None));
        entry.0 += 1;
        entry.1 = member.user_info.clone();
        Join::Joined { first, members: users.iter().map(|(id, (_, info))| (id.clone(), info.clone())).collect() }
    }

    /// One node's reference to the user goes; true when the user is gone from the channel.
    pub fn leave(&self, app_id: &str, channel: &str, user_id: &str) -> bool {
        let Ok(mut channels) = self.channels.lock() else { return false };
        let key = (app_id.to_owned(), channel.to_owned());
        let Some(users) = channels.get_mut(&key) else { return false };
        let gone = match users.get_mut(user_id) {
            Some(entry) if entry.0 > 1 => {
                entry.0 -= 1;
                false
            }
            Some(_) => {
                users.remove(user_id);
                true
            }
            None => false,
        };
        if users.is_empty() {
            channels.remove(&key);
        }
        gone
    }

    pub fn members(&self, app_id: &str, channel: &str) -> Vec<Member> {
        let Ok(channels) = self.channels.lock() else { return Vec::new() };
        channels
            .get(&(app_id.to_owned(), channel.to_owned()))
            .map(|users| users.iter().map(|(id, (_, info))| (id.clone(), info.clone())).collect())
            .unwrap_or_default()
    }

    /// Member counts of an app's presence channels.
    pub fn counts(&self, app_id: &str) -> HashMap<String, usize> {
        let Ok(channels) = self.channels.lock() else { return HashMap::new() };
        channels
            .iter()
            .filter(|((app, _), _)| app == app_id)
            .map(|((_, channel), users)| (channel.clone(), users.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> MemberData {
        MemberData { user_id: id.into(), user_info: Some(format!(r#"{{"n":"{id}"}}"#)) }
    }

    #[test]
    fn first_join_and_last_leave_per_user() {
        let p = MemoryPresence::default();
        assert!(matches!(p.join("a", "presence-r", &member("1"), 10), Join::Joined { first: true, .. }));
        match p.join("a", "presence-r", &member("1"), 10) {
            Join::Joined { first, members } => {
                assert!(!first, "a second node's reference");
                assert_eq!(members.len(), 1);
            }
            Join::Full => panic!(),
        }
        assert!(!p.leave("a", "presence-r", "1"));
        assert!(p.leave("a", "presence-r", "1"));
        assert!(p.members("a", "presence-r").is_empty());
        assert!(!p.leave("a", "presence-r", "1"), "leaving twice is a no-op");
    }

    #[test]
    fn the_cap_counts_users() {
        let p = MemoryPresence::default();
        p.join("a", "presence-r", &member("1"), 2);
        p.join("a", "presence-r", &member("2"), 2);
        assert_eq!(p.join("a", "presence-r", &member("3"), 2), Join::Full);
        assert!(matches!(p.join("a", "presence-r", &member("1"), 2), Join::Joined { first: false, .. }));
        assert_eq!(p.counts("a").get("presence-r"), Some(&2));
    }
}
