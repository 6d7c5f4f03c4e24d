//! The channels one connection is subscribed to, with the presence user it joined each as.
//!
//! A short vector, not a hash map: a connection has a handful of channels (at most
//! `MAX_CHANNELS_PER_CONNECTION`), a linear scan of them is as fast as hashing, and an idle
//! connection with one channel pays for one entry instead of a table.

#[derive(Debug, Default)]
pub(crate) struct Subscriptions(Vec<(String, Option<String>)>);

impl Subscriptions {
    /// Records a subscription (or replaces its user); returns the previous user if it was there.
    pub(crate) fn insert(&mut self, channel: String, user_id: Option<String>) -> Option<Option<String>> {
        match self.0.iter_mut().find(|(name, _)| *name == channel) {
            Some((_, user)) => Some(std::mem::replace(user, user_id)),
            None => {
                // Grow from one entry (a Vec would start at four): most connections have one channel.
                if self.0.len() == self.0.capacity() {
                    self.0.reserve_exact(self.0.len().max(1));
                }
                self.0.push((channel, user_id));
                None
            }
        }
    }

    /// Forgets a subscription; returns its user if it was there.
    pub(crate) fn remove(&mut self, channel: &str) -> Option<Option<String>> {
        let at = self.0.iter().position(|(name, _)| name == channel)?;
        Some(self.0.swap_remove(at).1)
    }

    pub(crate) fn get(&self, channel: &str) -> Option<&Option<String>> {
        self.0.iter().find(|(name, _)| name == channel).map(|(_, user)| user)
    }

    pub(crate) fn contains_key(&self, channel: &str) -> bool {
        self.get(channel).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Every channel name, leaving the set empty.
    pub(crate) fn take_names(&mut self) -> impl Iterator<Item = String> {
        std::mem::take(&mut self.0).into_iter().map(|(name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map() {
        let mut subs = Subscriptions::default();
        assert_eq!(subs.insert("a".into(), None), None);
        assert_eq!(subs.insert("presence-b".into(), Some("7".into())), None);
        assert_eq!(subs.insert("a".into(), None), Some(None), "no duplicate entry");
        assert_eq!(subs.len(), 2);
        assert_eq!(subs.get("presence-b"), Some(&Some("7".into())));
        assert!(subs.contains_key("a") && !subs.contains_key("c"));
        assert_eq!(subs.remove("a"), Some(None));
        assert_eq!(subs.remove("a"), None);
        assert_eq!(subs.take_names().collect::<Vec<_>>(), vec!["presence-b".to_owned()]);
        assert_eq!(subs.len(), 0);
    }
}
