//! A real `redis-server` per test, on a free loopback port.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A real `redis-server` on a free loopback port, stopped (by PID) on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Arguments after the port and persistence ones (a replica's
    /// `--replicaof`), or a Sentinel's config file.
    extra: Vec<String>,
    /// The server's working directory: a replica writes the primary's
    /// snapshot there, and a server loads any `dump.rdb` it finds there, so
    /// it is never the tests' own.
    dir: tempfile::TempDir,
    /// `--requirepass`: not in [`RedisServer::url`], as an operator would
    /// give it apart (`CD_REDIS_PASSWORD`).
    password: Option<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(Vec::new())
    }

    /// A server that requires `password` (`--requirepass`).
    pub fn with_password(password: &str) -> RedisServer {
        let mut server = RedisServer::start_with(vec!["--requirepass".into(), password.into()]);
        server.password = Some(password.to_owned());
        server
    }

    /// A replica of `primary`.
    pub fn replica_of(primary: &RedisServer) -> RedisServer {
        RedisServer::start_with(vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ])
    }

    /// A Sentinel watching `primary` as `main`, with two more needed to
    /// agree (quorum 2) and a 1 s down-after; its config lives in `dir`.
    pub fn sentinel(primary: &RedisServer, dir: &std::path::Path) -> RedisServer {
        let port = free_port();
        let config = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor main 127.0.0.1 {} 2\n\
                 sentinel down-after-milliseconds main 1000\nsentinel failover-timeout main 5000\n",
                primary.port
            ),
        )
        .expect("the sentinel's config is written");
        let mut server = RedisServer {
            port,
            child: None,
            extra: vec![config.display().to_string(), "--sentinel".into()],
            dir: tempfile::tempdir().expect("a dir for redis-server"),
            password: None,
        };
        server.restart();
        server
    }

    fn start_with(extra: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            extra,
            dir: tempfile::tempdir().expect("a dir for redis-server"),
            password: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        if self.extra.last().map(String::as_str) == Some("--sentinel") {
            command.args(&self.extra);
        } else {
            command
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                ])
                .args(&self.extra);
        }
        let child = command
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "\n\n*** redis-server cannot be started ({error}).\n*** These tests need a real Redis: \
                     `apt-get install redis-server` (.ci/run installs it).\n\n"
                )
            });
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server must be thawed to die of SIGKILL promptly.
            // SAFETY: kill(2) on the pid of our own child process.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a paused server (SIGCONT): it answers what it was sent meanwhile.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("redis-server is running");
        // SAFETY: kill(2) on the pid of our own child process.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "cannot signal redis-server");
    }

    pub fn client(&self) -> redis::Client {
        let mut info: redis::ConnectionInfo = self.url().parse().expect("redis url");
        info.redis.password.clone_from(&self.password);
        redis::Client::open(info).expect("redis url")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
