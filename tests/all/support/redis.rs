//! A private `redis-server` for a test: a free loopback port (never 6379), its own temporary
//! directory, no persistence unless asked (AOF for chaos tests), killed when dropped. It can be
//! stopped, killed and restarted on the same port and directory, so tests can take Redis away
//! from a running host and bring it back.
//!
//! ```ignore
//! let redis = RedisServer::start();
//! let client = redis.client().await;
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a starting server has to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// Options for [`RedisServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Append-only file with `appendfsync always`: every acknowledged write survives SIGKILL.
    pub aof: bool,
    /// Extra `--name value` arguments for redis-server.
    pub args: Vec<(String, String)>,
}

/// A running (or stopped) private redis-server.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    options: RedisOptions,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default())
    }

    /// Starts a server with AOF (`appendfsync always`).
    pub fn start_with_aof() -> RedisServer {
        RedisServer::start_with(RedisOptions {
            aof: true,
            ..RedisOptions::default()
        })
    }

    /// Starts a server with `options`, on a free port. Panics (this is a test helper) when
    /// redis-server is missing or does not come up.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        // Another process may grab the port between our probe and redis-server's bind; then
        // redis-server exits and we try another port.
        let mut last_error = String::new();
        for _ in 0..10 {
            let mut server = RedisServer {
                port: free_port(),
                dir: tempfile::Builder::new()
                    .prefix("wasmq-redis-")
                    .tempdir()
                    .expect("create a temporary directory for redis-server"),
                options: options.clone(),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("redis-server did not start after 10 tries: {last_error}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (AOF/RDB files, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A queue client connected to this server.
    pub async fn client(&self) -> wasmq::queue::Client {
        wasmq::queue::Client::connect(&self.url())
            .await
            .expect("connect a queue client to the test redis-server")
    }

    /// A plain async connection, for assertions on raw Redis state.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("open a redis client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }

    /// Sends one inline command and returns the raw reply line (blocking; fine in helpers).
    pub fn command(&self, command: &str) -> std::io::Result<String> {
        inline_command(self.port, command)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Graceful stop: `SHUTDOWN` (flushes the AOF), then waits for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The connection drops when the server exits; the reply does not matter.
            let _ = inline_command(self.port, "SHUTDOWN");
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Abrupt stop: SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (after `stop` or `kill`).
    pub fn restart(&mut self) {
        self.kill();
        // The old socket may linger briefly; redis-server uses SO_REUSEADDR, but retry anyway.
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(err) if Instant::now() > deadline => {
                    panic!("redis-server did not restart on port {}: {err}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--appendonly")
            .arg(if self.options.aof { "yes" } else { "no" });
        if self.options.aof {
            command.arg("--appendfsync").arg("always");
        }
        for (name, value) in &self.options.args {
            command
                .arg(format!("--{}", name.trim_start_matches('-')))
                .arg(value);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match command.spawn() {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (the tests need it, they do not skip): \
                 apt-get install -y redis-server"
            ),
            Err(err) => panic!("cannot run redis-server: {err}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(reply) = inline_command(self.port, "PING")
                && reply.starts_with("+PONG")
            {
                return Ok(());
            }
            let exited = match &mut self.child {
                Some(child) => !matches!(child.try_wait(), Ok(None)),
                None => true,
            };
            if exited || Instant::now() > deadline {
                self.kill();
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "redis-server on port {} did not answer PING ({}); log: {}",
                    self.port,
                    if exited { "it exited" } else { "timed out" },
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port chosen by the OS (ephemeral range, so never 6379).
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a probe socket");
        let port = listener.local_addr().expect("probe socket address").port();
        if port != 6379 {
            return port;
        }
    }
}

fn inline_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
