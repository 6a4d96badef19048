//! The per-job log: guest stdout, stderr and `context.log` lines, kept in one bounded buffer
//! and mirrored to `tracing` with the job id.
//!
//! Invariant: a job's log never holds more than its cap in message bytes, whatever the guest
//! writes. Past the cap, output is counted and dropped (cheaply: no copy is made), and one
//! marker line saying how much was dropped is added when the attempt ends.
//!
//! With tracing on, a line kept while the handler runs is also an event of its `run` span
//! ([`LogEvents`], bounded on its own).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::telemetry::LogEvents;

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

/// The least a log line counts against a job's log cap, whatever its length: the host keeps
/// and emits each line with its own overhead (a record, a tracing event), so a flood of empty
/// lines is bounded like a flood of long ones (a 64 KiB cap keeps at most 1,024 lines).
pub(crate) const LINE_FLOOR: usize = 64;

/// The bounded log of one attempt.
#[derive(Debug)]
pub(crate) struct JobLog {
    job_id: Arc<str>,
    cap: usize,
    used: usize,
    dropped: u64,
    dropped_lines: u64,
    lines: Vec<LogLine>,
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
    /// With tracing on, the handler-run span, which takes the lines kept as events.
    events: Option<LogEvents>,
}

impl JobLog {
    pub fn new(job_id: Arc<str>, cap: usize) -> Self {
        Self {
            job_id,
            cap,
            used: 0,
            dropped: 0,
            dropped_lines: 0,
            lines: Vec::new(),
            partial_stdout: Vec::new(),
            partial_stderr: Vec::new(),
            events: None,
        }
    }

    /// Lines kept from now on are also events of `events`' span, until [`JobLog::take_events`].
    pub fn set_events(&mut self, events: LogEvents) {
        self.events = Some(events);
    }

    pub fn take_events(&mut self) -> Option<LogEvents> {
        self.events.take()
    }

    /// Adds one whole line. A line counts [`LINE_FLOOR`] bytes against the cap at least, so
    /// empty lines cannot pile up uncounted.
    pub fn line(&mut self, source: LogSource, message: &str) {
        let cost = message.len().max(LINE_FLOOR);
        if self.used + cost > self.cap {
            self.dropped += message.len() as u64;
            self.dropped_lines += 1;
            return;
        }
        self.used += cost;
        emit(&self.job_id, source, message);
        if let Some(events) = &mut self.events {
            events.line(source.as_str(), message);
        }
        self.lines.push(LogLine {
            source,
            message: message.to_string(),
        });
    }

    /// Adds raw stream bytes, split into lines at `\n`; an unterminated tail waits for more.
    fn write(&mut self, source: LogSource, mut bytes: &[u8]) {
        if self.used + LINE_FLOOR > self.cap {
            // Not even an empty line fits: count what is dropped without splitting it.
            // (Bytes of text, as `line` counts them: the newlines are not.)
            let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
            self.dropped += (bytes.len() - newlines) as u64;
            self.dropped_lines += newlines as u64;
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
        if self.dropped > 0 || self.dropped_lines > 0 {
            let marker = format!(
                "[wasmq: log truncated, {} lines ({} bytes) dropped past the cap of {} bytes, \
                 each line counting {LINE_FLOOR} bytes at least]",
                self.dropped_lines, self.dropped, self.cap
            );
            tracing::info!(
                job_id = %self.job_id,
                dropped = self.dropped,
                dropped_lines = self.dropped_lines,
                "guest log truncated"
            );
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
        let mut l = log(3 * LINE_FLOOR);
        l.line(LogSource::Info, "a");
        l.line(LogSource::Info, "b");
        // An unterminated tail longer than the room left is dropped, not buffered.
        l.write(LogSource::Stdout, &[b'x'; 1000]);
        l.line(LogSource::Info, "c");
        l.line(LogSource::Info, "d");
        let (lines, dropped) = l.finish();
        let kept: Vec<_> = lines
            .iter()
            .filter(|l| l.source != LogSource::Host)
            .map(|l| l.message.as_str())
            .collect();
        assert_eq!(kept, ["a", "b", "c"]);
        assert_eq!(dropped, 1000 + 1);
        let marker = lines.last().expect("a marker");
        assert_eq!(marker.source, LogSource::Host);
        assert!(
            marker.message.contains("1 lines (1001 bytes) dropped"),
            "{}",
            marker.message
        );
    }

    #[test]
    fn a_flood_of_empty_lines_counts_against_the_cap() {
        let cap = 64 * 1024;
        let mut l = log(cap);
        for _ in 0..100 {
            l.write(LogSource::Stdout, &[b'\n'; 10_000]);
        }
        for _ in 0..10_000 {
            l.line(LogSource::Info, "");
        }
        let (lines, dropped) = l.finish();
        assert_eq!(
            lines.len(),
            cap / LINE_FLOOR + 1,
            "the lines that fit, and the marker"
        );
        let marker = &lines[lines.len() - 1].message;
        let expected = 100 * 10_000 + 10_000 - cap / LINE_FLOOR;
        assert!(
            marker.contains(&format!("{expected} lines (0 bytes) dropped")),
            "{marker}"
        );
        assert_eq!(dropped, 0);
    }
}
