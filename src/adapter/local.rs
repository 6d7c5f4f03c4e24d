//! The single-process adapter: the cluster is this node.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Adapter, Broadcast, LocalNode};

pub struct LocalAdapter {
    node: Arc<dyn LocalNode>,
}

impl LocalAdapter {
    pub fn new(node: Arc<dyn LocalNode>) -> Self {
        LocalAdapter { node }
    }
}

#[async_trait]
impl Adapter for LocalAdapter {
    async fn publish(&self, broadcast: Broadcast) -> usize {
        self.node.deliver(&broadcast)
    }

    async fn subscription_count(&self, app_id: &str, channel: &str) -> usize {
        self.node.subscription_count(app_id, channel)
    }

    async fn members(&self, app_id: &str, channel: &str) -> Vec<String> {
        self.node.members(app_id, channel)
    }

    async fn channels(&self, app_id: &str) -> Vec<(String, usize, usize)> {
        self.node.channels(app_id)
    }

    async fn connection_count(&self, app_id: &str) -> usize {
        self.node.connection_count(app_id)
    }

    async fn terminate_user(&self, app_id: &str, user_id: &str) {
        self.node.terminate_user(app_id, user_id);
    }
}
