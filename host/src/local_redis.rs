//! A private `redis-server` process on a free loopback port: what `wasmq dev`, the tests and
//! the benchmarks run against, so nothing ever touches a shared Redis on 6379.
//!
//! Each server has its own temporary directory (logs, AOF), no persistence unless asked (AOF
//! with `appendfsync always`, for the no-loss claims), and is killed when dropped. It can be
//! stopped, killed and restarted on the same port and directory, so a test can take Redis away
//! from a running host and bring it back.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a starting server has to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// Options for [`LocalRedis::start`].
#[derive(Debug, Clone, Default)]
pub struct LocalRedisOptions {
    /// Append-only file with `appendfsync always`: every acknowledged write survives SIGKILL.
    pub aof: bool,
    /// Extra `--name value` arguments for redis-server.
    pub args: Vec<(String, String)>,
}

/// Why a local redis-server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalRedisError {
    #[error(
        "redis-server is not installed; install it (Debian/Ubuntu: `apt-get install -y \
         redis-server`; macOS: `brew install redis`)"
    )]
    NotInstalled,
    #[error("cannot run redis-server: {0}")]
    Spawn(std::io::Error),
    #[error("cannot create a directory for redis-server: {0}")]
    Dir(std::io::Error),
    #[error("redis-server did not start: {0}")]
    NotStarted(String),
}

/// A running (or stopped) private redis-server.
pub struct LocalRedis {
    port: u16,
    dir: TempDir,
    options: LocalRedisOptions,
    child: Option<Child>,
}

impl LocalRedis {
    /// Starts a server with `options` on a free loopback port.
    pub fn start(options: LocalRedisOptions) -> Result<LocalRedis, LocalRedisError> {
        // Another process may grab the port between our probe and redis-server's bind; then
        // redis-server exits and we try another port.
        let mut last_error = String::new();
        for _ in 0..10 {
            let mut server = LocalRedis {
                port: free_port().map_err(LocalRedisError::Spawn)?,
                dir: tempfile::Builder::new()
                    .prefix("wasmq-redis-")
                    .tempdir()
                    .map_err(LocalRedisError::Dir)?,
                options: options.clone(),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(LocalRedisError::NotStarted(why)) => last_error = why,
                Err(other) => return Err(other),
            }
        }
        Err(LocalRedisError::NotStarted(format!(
            "no luck after 10 ports: {last_error}"
        )))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's working directory (AOF/RDB files, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends one inline command and returns the raw reply (blocking).
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
    pub fn restart(&mut self) -> Result<(), LocalRedisError> {
        self.kill();
        // The old socket may linger briefly: retry until the deadline.
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(LocalRedisError::NotStarted(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> Result<(), LocalRedisError> {
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
        let child = command.spawn().map_err(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                LocalRedisError::NotInstalled
            } else {
                LocalRedisError::Spawn(err)
            }
        })?;
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
                return Err(LocalRedisError::NotStarted(format!(
                    "redis-server on port {} did not answer PING ({}); log: {}",
                    self.port,
                    if exited { "it exited" } else { "timed out" },
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port chosen by the OS (ephemeral range, so never 6379).
fn free_port() -> std::io::Result<u16> {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if port != 6379 {
            return Ok(port);
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
