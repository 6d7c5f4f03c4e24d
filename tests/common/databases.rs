//! A real PostgreSQL and a real MariaDB, each in its own temporary directory on a free loopback
//! port, started by the test that needs it and stopped when dropped. Missing binaries fail the
//! test (scripts/test installs them), never skip it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a database may take to start or stop.
const DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-{kind}-{}-{}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program` run as `user` when this test runs as root (both servers refuse to run as root);
/// `setpriv` execs in place, so the child's pid is the server's own.
fn as_user(user: &str, program: &Path, dir: &Path) -> Command {
    if is_root() {
        let status = Command::new("chown").arg("-R").arg(format!("{user}:")).arg(dir).status();
        assert!(status.is_ok_and(|s| s.success()), "chown {} to {user} failed", dir.display());
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", user, "--regid", user, "--init-groups", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops `child` with `signal`, then SIGKILL if it is still there after the deadline.
fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The newest PostgreSQL server binaries on this machine (`HERALD_TEST_PG_BIN` to choose).
fn postgres_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("HERALD_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("postgres").exists())
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL must be installed (scripts/test installs the postgresql package)")
}

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = postgres_bin();
        let dir = temp_dir("pg");
        let data = dir.join("data");
        run(
            as_user("postgres", &bin.join("initdb"), &dir)
                .args(["-U", "herald", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"])
                .arg(&data),
            "initdb",
        );
        let mut pg = Postgres { port: free_port(), bin, dir, child: None };
        pg.resume();
        pg
    }

    /// Starts the server again on the same port and data (after [`Postgres::halt`]).
    pub fn resume(&mut self) {
        let mut child = as_user("postgres", &self.bin.join("postgres"), &self.dir)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-k")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        wait_for_port(self.port, &mut child, "postgres");
        self.child = Some(child);
        // Listening comes a moment before accepting queries.
        let deadline = Instant::now() + DEADLINE;
        while !self.try_sql("SELECT 1") {
            assert!(Instant::now() < deadline, "postgres accepted no query within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: every connection is cut).
    pub fn halt(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, "INT");
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://herald@127.0.0.1:{}/postgres", self.port)
    }

    fn psql(&self, sql: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "herald", "-d", "postgres"]).args([
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-A",
            "-t",
            "-c",
            sql,
        ]);
        cmd
    }

    fn try_sql(&self, sql: &str) -> bool {
        self.psql(sql).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// Runs SQL, failing the test if it fails; returns what psql printed (unaligned, tuples only).
    pub fn sql(&self, sql: &str) -> String {
        run(&mut self.psql(sql), &format!("psql {sql:?}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, "QUIT");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Mariadb {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn mariadb_program(names: &[&str]) -> PathBuf {
    for name in names {
        for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
            let path = Path::new(dir).join(name);
            if path.exists() {
                return path;
            }
        }
    }
    panic!("MariaDB must be installed (scripts/test installs the mariadb-server package): no {names:?}");
}

impl Mariadb {
    pub fn start() -> Mariadb {
        let dir = temp_dir("mariadb");
        let install = mariadb_program(&["mariadb-install-db", "mysql_install_db"]);
        run(
            as_user("mysql", &install, &dir)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", dir.join("data").display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"]),
            "mariadb-install-db",
        );
        std::fs::write(
            dir.join("init.sql"),
            "CREATE DATABASE IF NOT EXISTS herald;\n\
             CREATE USER IF NOT EXISTS 'herald'@'%' IDENTIFIED BY 'herald';\n\
             GRANT ALL ON *.* TO 'herald'@'%';\n",
        )
        .unwrap();
        let mut db = Mariadb { port: free_port(), dir, child: None };
        db.resume();
        db
    }

    pub fn resume(&mut self) {
        let server = mariadb_program(&["mariadbd", "mysqld"]);
        let mut child = as_user("mysql", &server, &self.dir)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--init-file={}", self.dir.join("init.sql").display()))
            .args(["--bind-address=127.0.0.1", &format!("--port={}", self.port), "--skip-log-bin"])
            .args(["--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        wait_for_port(self.port, &mut child, "mariadbd");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while !self.try_sql("SELECT 1") {
            assert!(Instant::now() < deadline, "mariadb accepted no query within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn halt(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, "TERM");
        }
    }

    pub fn url(&self) -> String {
        format!("mysql://herald:herald@127.0.0.1:{}/herald", self.port)
    }

    fn client(&self, sql: &str) -> Command {
        let mut cmd = Command::new(mariadb_program(&["mariadb", "mysql"]));
        cmd.args(["--no-defaults", "-h", "127.0.0.1", "-P", &self.port.to_string(), "-uherald", "-pherald"])
            .args(["-N", "-B", "herald", "-e", sql]);
        cmd
    }

    fn try_sql(&self, sql: &str) -> bool {
        self.client(sql).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    pub fn sql(&self, sql: &str) -> String {
        run(&mut self.client(sql), &format!("mariadb {sql:?}"))
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, "KILL");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
