//! The per-job log: guest stdout, stderr and `context.log` lines, kept in one bounded buffer
//! and mirrored to `tracing` with the job id.
//!
//! Invariant: a job's log never holds more than its cap in message bytes, whatever the guest
//! writes. Past the cap, output is counted and dropped (cheaply: no copy is made), and one
//! marker line saying how much was dropped is added when the attempt ends.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    Stdout,
    Stderr,
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    /// The host's own note in a guest's log (the truncation marker).
    Host,
}

impl LogSource {
    /// The name it is serialized under.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Host => "host",
        }
    }
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub source: LogSource,
    pub message: String,
}

/// The bounded log of one attempt.
#[derive(Debug)]
pub(crate) struct JobLog {
    job_id: Arc<str>,
    cap: usize,
    used: usize,
    dropped: u64,
    lines: Vec<LogLine>,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
}

impl JobLog {
    pub fn new(job_id: Arc<str>, cap: usize) -> Self {
        Self {
            job_id,
            cap,
            used: 0,
            dropped: 0,
            lines: Vec::new(),
            partial_stdout: Vec::new(),
            partial_stderr: Vec::new(),
        }
    }

    /// Adds one whole line.
    pub fn line(&mut self, source: LogSource, message: &str) {
        if self.used + message.len() > self.cap {
            self.dropped += message.len() as u64;
            return;
        }
        self.used += message.len();
        emit(&self.job_id, source, message);
        self.lines.push(LogLine {
            source,
            message: message.to_string(),
        });
    }

    /// Adds raw stream bytes, split into lines at `\n`; an unterminated tail waits for more.
    fn write(&mut self, source: LogSource, mut bytes: &[u8]) {
        if self.used >= self.cap {
            self.dropped += bytes.len() as u64;
            return;
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(self.partial(source));
            line.extend_from_slice(&bytes[..pos]);
            self.line(source, &String::from_utf8_lossy(&line));
            bytes = &bytes[pos + 1..];
        }
        // A tail longer than what is left of the cap can never be kept whole: count it now
        // rather than buffer an unbounded line.
        let room = self.cap.saturating_sub(self.used);
        let partial = self.partial(source);
        if partial.len() + bytes.len() > room {
            let dropped = (partial.len() + bytes.len()) as u64;
            partial.clear();
            self.dropped += dropped;
        } else {
            partial.extend_from_slice(bytes);
        }
    }

    fn partial(&mut self, source: LogSource) -> &mut Vec<u8> {
        match source {
            LogSource::Stderr => &mut self.partial_stderr,
            _ => &mut self.partial_stdout,
        }
    }

    /// Ends the log: flushes unterminated lines and adds the truncation marker if anything
    /// was dropped. Returns the lines and the number of bytes dropped.
    pub fn finish(&mut self) -> (Vec<LogLine>, u64) {
        for source in [LogSource::Stdout, LogSource::Stderr] {
            let tail = std::mem::take(self.partial(source));
            if !tail.is_empty() {
                self.line(source, &String::from_utf8_lossy(&tail));
            }
        }
        if self.dropped > 0 {
            let marker = format!(
                "[wasmq: log truncated, {} bytes dropped past the cap of {} bytes]",
                self.dropped, self.cap
            );
            tracing::info!(job_id = %self.job_id, dropped = self.dropped, "guest log truncated");
            self.lines.push(LogLine {
                source: LogSource::Host,
                message: marker,
            });
        }
        (std::mem::take(&mut self.lines), self.dropped)
    }
}

fn emit(job_id: &str, source: LogSource, message: &str) {
    const T: &str = "wasmq::guest";
    match source {
        LogSource::Trace => tracing::trace!(target: T, job_id, "{message}"),
        LogSource::Debug => tracing::debug!(target: T, job_id, "{message}"),
        // Guest output is the guest's business, not a host warning: stdout and stderr are
        // info; only the guest's own warn/error lines rise above it.
        LogSource::Stdout | LogSource::Stderr | LogSource::Info | LogSource::Host => {
            tracing::info!(target: T, job_id, stream = ?source, "{message}")
        }
        LogSource::Warn => tracing::warn!(target: T, job_id, "{message}"),
        LogSource::Error => tracing::error!(target: T, job_id, "{message}"),
    }
}

/// Locks a job log. A panic while the lock was held cannot leave the log inconsistent in a
/// way that matters (at worst a line is missing), so a poisoned lock is used as is.
pub(crate) fn lock(log: &Mutex<JobLog>) -> MutexGuard<'_, JobLog> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A guest's stdout or stderr, writing into the job's log.
#[derive(Clone)]
pub(crate) struct CaptureStream {
    log: Arc<Mutex<JobLog>>,
    source: LogSource,
}

impl CaptureStream {
    pub fn new(log: Arc<Mutex<JobLog>>, source: LogSource) -> Self {
        Self { log, source }
    }
}

/// How much a guest may write per `check-write`; the log itself is the real bound.
const WRITE_BUDGET: usize = 64 * 1024;

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        lock(&self.log).write(self.source, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[async_trait::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        lock(&self.log).write(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(cap: usize) -> JobLog {
        JobLog::new(Arc::from("job-1"), cap)
    }

    #[test]
    fn splits_stream_bytes_into_lines_across_writes() {
        let mut l = log(1024);
        l.write(LogSource::Stdout, b"hel");
        l.write(LogSource::Stdout, b"lo\nwor");
        l.write(LogSource::Stderr, b"oops\n");
        let (lines, dropped) = l.finish();
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.source, l.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (LogSource::Stdout, "hello"),
                (LogSource::Stderr, "oops"),
                (LogSource::Stdout, "wor")
            ]
        );
        assert_eq!(dropped, 0);
    }

    #[test]
    fn keeps_at_most_the_cap_and_marks_the_truncation() {
        let mut l = log(10);
        l.line(LogSource::Info, "12345");
        l.line(LogSource::Info, "123456");
        l.write(LogSource::Stdout, &[b'x'; 1000]);
        l.line(LogSource::Info, "1234");
        let (lines, dropped) = l.finish();
        let kept: usize = lines
            .iter()
            .filter(|l| l.source != LogSource::Host)
            .map(|l| l.message.len())
            .sum();
        assert!(kept <= 10, "kept {kept} bytes");
        assert_eq!(dropped, 6 + 1000);
        let marker = lines.last().map(|l| l.source);
        assert_eq!(marker, Some(LogSource::Host));
    }
}
