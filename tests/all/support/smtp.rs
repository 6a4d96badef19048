//! An SMTP server on loopback for the e-mail alert tests. It speaks the part of RFC 5321 a
//! client sending one message needs (EHLO/HELO, AUTH PLAIN and LOGIN (RFC 4954), MAIL, RCPT,
//! DATA with dot-unstuffing, RSET, NOOP, QUIT), refuses mail before a successful AUTH when it
//! was given credentials, checks the credentials itself, and keeps every message it accepted.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The user name the session authenticated as.
    pub user: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers, blank line, body), dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl Mail {
    /// The value of header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut unfolded: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            match (line.starts_with([' ', '\t']), unfolded.last_mut()) {
                (true, Some(last)) => last.push_str(line),
                _ => unfolded.push(line.to_string()),
            }
        }
        unfolded.iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }

    /// The body after the headers, decoded per its `Content-Transfer-Encoding` (7bit,
    /// quoted-printable or base64).
    pub fn body(&self) -> String {
        let raw = self
            .data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body);
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        match encoding.as_str() {
            "quoted-printable" => quoted_printable(raw),
            "base64" => decode(&raw.replace("\r\n", "")),
            _ => raw.to_string(),
        }
    }
}

#[derive(Default)]
struct State {
    mails: Vec<Mail>,
    /// AUTH attempts refused (wrong user or password).
    auth_failures: usize,
    /// Commands the sink did not know.
    unknown: Vec<String>,
}

pub struct SmtpSink {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl SmtpSink {
    /// Starts the sink on 127.0.0.1; with `credentials`, mail needs AUTH with exactly them.
    pub async fn start(credentials: Option<(&str, &str)>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (state, credentials) = (shared.clone(), credentials.clone());
                tokio::spawn(async move {
                    let _ = session(socket, state, credentials).await;
                });
            }
        });
        SmtpSink { port, state }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.state.lock().unwrap().mails.clone()
    }

    pub fn auth_failures(&self) -> usize {
        self.state.lock().unwrap().auth_failures
    }

    pub fn unknown_commands(&self) -> Vec<String> {
        self.state.lock().unwrap().unknown.clone()
    }
}

/// RFC 2045 quoted-printable: `=` at a line's end joins it to the next, `=XX` is a byte.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode(b64: &str) -> String {
    String::from_utf8_lossy(&STANDARD.decode(b64.trim()).unwrap_or_default()).into_owned()
}

async fn session(
    socket: tokio::net::TcpStream,
    state: Arc<Mutex<State>>,
    credentials: Option<(String, String)>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut user: Option<String> = None;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let mut check = |given_user: String, given_password: String| {
            if credentials.as_ref() == Some(&(given_user.clone(), given_password.clone())) {
                user = Some(given_user);
                "235 2.7.0 Authentication successful\r\n".to_string()
            } else {
                state.lock().unwrap().auth_failures += 1;
                // Like a careless server, it quotes what it was given: a client must not log
                // that as it stands.
                format!(
                    "535 5.7.8 Authentication credentials invalid: {given_user} / \
                     {given_password}\r\n"
                )
            }
        };
        let reply: String = if upper.starts_with("EHLO") {
            "250-sink.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n".into()
        } else if upper.starts_with("HELO") {
            "250 sink.test\r\n".into()
        } else if upper.starts_with("AUTH PLAIN") {
            let initial = line
                .get("AUTH PLAIN".len()..)
                .unwrap_or("")
                .trim()
                .to_string();
            let response = if initial.is_empty() {
                write.write_all(b"334 \r\n").await?;
                lines.next_line().await?.unwrap_or_default()
            } else {
                initial
            };
            // authzid NUL authcid NUL password
            let decoded = decode(&response);
            let mut parts = decoded.split('\0');
            let (_, u, p) = (parts.next(), parts.next(), parts.next());
            check(u.unwrap_or("").into(), p.unwrap_or("").into())
        } else if upper.starts_with("AUTH LOGIN") {
            write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
            let u = decode(&lines.next_line().await?.unwrap_or_default());
            write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
            let p = decode(&lines.next_line().await?.unwrap_or_default());
            check(u, p)
        } else if upper.starts_with("MAIL FROM:") {
            if credentials.is_some() && user.is_none() {
                "530 5.7.0 Authentication required\r\n".into()
            } else {
                from = Some(line["MAIL FROM:".len()..].trim().to_string());
                to.clear();
                "250 2.1.0 OK\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            if from.is_none() {
                "503 5.5.1 MAIL first\r\n".into()
            } else {
                to.push(line["RCPT TO:".len()..].trim().to_string());
                "250 2.1.5 OK\r\n".into()
            }
        } else if upper == "DATA" {
            if to.is_empty() {
                "503 5.5.1 RCPT first\r\n".into()
            } else {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                while let Some(line) = lines.next_line().await? {
                    if line == "." {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    data.push_str("\r\n");
                }
                state.lock().unwrap().mails.push(Mail {
                    user: user.clone(),
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                });
                "250 2.0.0 OK: queued\r\n".into()
            }
        } else if upper == "RSET" {
            from = None;
            to.clear();
            "250 2.0.0 OK\r\n".into()
        } else if upper == "NOOP" {
            "250 2.0.0 OK\r\n".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            state.lock().unwrap().unknown.push(line.clone());
            "502 5.5.2 Command not recognized\r\n".into()
        };
        write.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}
