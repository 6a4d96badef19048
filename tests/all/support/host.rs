//! Real `wasmq run` processes: started with flags, signalled with real signals, their exit
//! status observed. Their log goes to a file, printed when a test fails to help the reader.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct HostProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl HostProcess {
    /// Starts `wasmq run --redis <url> <args>`.
    pub fn start(redis_url: &str, args: &[&str]) -> HostProcess {
        Self::spawn(redis_url, None, args)
    }

    /// Starts `wasmq run --redis <url> --config <file> <args>`, the file holding `toml`.
    pub fn start_with_config(redis_url: &str, toml: &str, args: &[&str]) -> HostProcess {
        Self::spawn(redis_url, Some(toml), args)
    }

    /// Starts `wasmq run --redis <url> [--config <file>] <args>` with extra environment
    /// variables, the file (if any) holding `toml`.
    pub fn start_with_env(
        redis_url: &str,
        toml: Option<&str>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> HostProcess {
        Self::spawn_with(redis_url, toml, env, args)
    }

    fn spawn(redis_url: &str, toml: Option<&str>, args: &[&str]) -> HostProcess {
        Self::spawn_with(redis_url, toml, &[], args)
    }

    fn spawn_with(
        redis_url: &str,
        toml: Option<&str>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> HostProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config_args = Vec::new();
        if let Some(toml) = toml {
            let config = dir.path().join("wasmq.toml");
            std::fs::write(&config, toml).expect("write wasmq.toml");
            config_args = vec!["--config".into(), config.into_os_string()];
        }
        let log = dir.path().join("host.log");
        let file = std::fs::File::create(&log).expect("create host log");
        let child = Command::new(env!("CARGO_BIN_EXE_wasmq"))
            .arg("run")
            .arg("--redis")
            .arg(redis_url)
            .args(config_args)
            .args(args)
            .env("RUST_LOG", "info,wasmq::guest=warn")
            .envs(env.iter().copied())
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
