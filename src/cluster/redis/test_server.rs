//! A real `redis-server` for the Redis implementation's unit tests: started on a free port,
//! killed when dropped. `scripts/test` installs Redis before it runs the tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::connection::Commands;

pub struct TestRedis {
    pub port: u16,
    child: Child,
}

impl TestRedis {
    pub fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for these tests (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TestRedis { port, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn commands(&self) -> Commands {
        Commands::connect(&[self.url()]).await.expect("connect to the test redis-server")
    }

    /// Stops answering without closing any socket (SIGSTOP), like a stalled server.
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill");
    assert!(status.success());
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        signal(self.child.id(), "-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node with no sockets of its own that records what reaches it, for tests of the state and
/// the broker.
#[derive(Default)]
pub struct RecordingNode(pub std::sync::Mutex<Vec<String>>);

impl RecordingNode {
    pub fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl crate::cluster::LocalNode for RecordingNode {
    fn deliver(&self, b: &crate::cluster::Broadcast) -> usize {
        self.0.lock().unwrap().push(format!("{}/{}: {}", b.app_id, b.channel.name, b.frame.as_str()));
        1
    }
    fn terminate_user(&self, app_id: &str, user_id: &str) -> usize {
        self.0.lock().unwrap().push(format!("terminate {app_id}/{user_id}"));
        1
    }
    fn subscription_count(&self, _app_id: &str, _channel: &str) -> usize {
        0
    }
    fn channels(&self, _app_id: &str) -> Vec<(String, usize)> {
        Vec::new()
    }
    fn connection_count(&self, _app_id: &str) -> usize {
        0
    }
    fn app_ids(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What a node's parts share, on `redis`, marked healthy as a started node would be.
pub async fn shared_on(redis: &TestRedis, node: u32, prefix: &str) -> std::sync::Arc<super::Shared> {
    use std::sync::atomic::AtomicBool;
    let settings = super::RedisSettings {
        urls: vec![redis.url()],
        prefix: prefix.to_owned(),
        node_timeout: Duration::from_millis(500),
    };
    std::sync::Arc::new(super::Shared {
        commands: redis.commands().await,
        keys: super::keys::Keys::new(prefix),
        node,
        settings,
        health: super::Health { subscribed: AtomicBool::new(true), commands_ok: AtomicBool::new(true) },
    })
}

/// A node's state on `redis`, marked healthy as a started node would be.
pub async fn state_on(redis: &TestRedis, node: u32, prefix: &str) -> std::sync::Arc<super::state::RedisState> {
    let shared = shared_on(redis, node, prefix).await;
    let apps = crate::apps::LiveApps::new(&[crate::config::AppConfig::new("1", "k", "s")]);
    super::state::RedisState::new(shared, std::sync::Arc::new(RecordingNode::default()), apps)
}
