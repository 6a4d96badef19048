//! Real `wasmq run` processes: started with flags, signalled with real signals, their exit
//! status observed. Their log goes to a file, printed when a test fails to help the reader.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `wasmq run` (from [`HostProcess::builder`]), killed when dropped.
pub struct HostProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a [`HostProcess`] is started with: `wasmq run --redis <url> [--config <file>]
/// <args>`, with `RUST_LOG=info,wasmq::guest=warn` and any extra environment variables
/// (which may override it).
///
/// ```ignore
/// let host = HostProcess::builder(&redis.url())
///     .config(&toml)
///     .env("RUST_LOG", "debug")
///     .args(["--queues", Q])
///     .start();
/// ```
#[must_use = "a host builder does nothing until `start`"]
pub struct HostBuilder {
    redis_url: String,
    config: Option<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl HostBuilder {
    /// Writes `toml` to a `wasmq.toml` in the host's own directory and passes it as `--config`.
    pub fn config(mut self, toml: &str) -> HostBuilder {
        self.config = Some(toml.to_string());
        self
    }

    /// Sets one environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> HostBuilder {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets environment variables of the process, in order.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> HostBuilder {
        for (key, value) in vars {
            self = self.env(key, value);
        }
        self
    }

    /// Appends command-line arguments after `--redis <url>` (and `--config <file>`).
    pub fn args<I, S>(mut self, args: I) -> HostBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_string()));
        self
    }

    /// Spawns the process; its stderr goes to a log file in its own directory.
    pub fn start(self) -> HostProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config_args = Vec::new();
        if let Some(toml) = &self.config {
            let config = dir.path().join("wasmq.toml");
            std::fs::write(&config, toml).expect("write wasmq.toml");
            config_args = vec!["--config".into(), config.into_os_string()];
        }
        let log = dir.path().join("host.log");
        let file = std::fs::File::create(&log).expect("create host log");
        let child = Command::new(env!("CARGO_BIN_EXE_wasmq"))
            .arg("run")
            .arg("--redis")
            .arg(&self.redis_url)
            .args(config_args)
            .args(&self.args)
            .env("RUST_LOG", "info,wasmq::guest=warn")
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn wasmq run");
        HostProcess {
            child,
            log,
            _dir: dir,
        }
    }
}

impl HostProcess {
    /// A `wasmq run --redis <redis_url>` to set up with [`HostBuilder`]'s methods, then
    /// [`HostBuilder::start`].
    pub fn builder(redis_url: &str) -> HostBuilder {
        HostBuilder {
            redis_url: redis_url.to_string(),
            config: None,
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn sigint(&self) {
        self.signal("INT");
    }

    pub fn sigkill(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, failing the test after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "host did not exit within {within:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- wasmq host log ---\n{}", self.log_text());
        }
    }
}
