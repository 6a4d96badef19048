//! Redis over TLS: a private `redis-server` that listens on a TLS port only (`--port 0`) and
//! requires client certificates, with a CA, server and client certificates made by the test
//! (`openssl`); the CLI and a real host connect by `rediss://...?tls_ca=&tls_cert=&tls_key=`,
//! and a one-node Redis Cluster over TLS by `rediss+cluster://`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wasmq::queue::{Client, JobState};

use crate::support::eventually;
use crate::support::guests;
use crate::support::host::HostProcess;

const Q: &str = "tls-q";

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, in `dir`.
struct Certs {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (Debian/Ubuntu: `apt-get install -y openssl`)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

impl Certs {
    fn make() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=wasmq test CA"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(d, &ca);
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            let (key, csr, pem, extfile) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let mut req = vec!["req", "-subj", "/CN=wasmq test"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr]);
            openssl(d, &req);
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-days",
                    "2",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-extfile",
                    &extfile,
                ],
            );
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// The query that names the CA and the client certificate.
    fn query(&self) -> String {
        format!(
            "tls_ca={}&tls_cert={}&tls_key={}",
            self.file("ca.pem"),
            self.file("client.pem"),
            self.file("client.key")
        )
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server on a TLS port only, requiring client certificates; killed when dropped.
struct TlsRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(certs: &Certs, extra: &[&str]) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--tls-port")
            .arg(port.to_string())
            .arg("--tls-cert-file")
            .arg(certs.path("server.pem"))
            .arg("--tls-key-file")
            .arg(certs.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(certs.path("ca.pem"))
            .args(["--tls-auth-clients", "yes"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (Debian/Ubuntu: `apt-get install -y redis-server`)");
        let server = TlsRedis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on its TLS port; log:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- redis-server log ---\n{}", self.log());
        }
    }
}

fn wasmq(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .args(args)
        .args(["--redis", url])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Enqueues by the CLI, runs the job on a real host, and waits for its result: every kind of
/// connection a host makes (commands, blocking waits, pub/sub) goes over `url`.
async fn a_job_runs_over(url: &str) {
    let out = wasmq(url, &["enqueue", Q, "greet", "--payload", "over tls"]);
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let host = HostProcess::builder(url)
        .args([
            "--queues",
            Q,
            "--no-cache",
            "--handler",
            &guests::handler("greet", "echo"),
        ])
        .start();
    let client = Client::connect(url).await.unwrap();
    let result = eventually("the job to complete", Duration::from_secs(60), || async {
        let job = client.get(Q, &id).await.ok()??;
        (job.state == JobState::Completed).then_some(job.result)
    })
    .await;
    assert_eq!(result.as_deref(), Some(&b"over tls"[..]));
    let stats = wasmq(url, &["queue", "stats", Q, "--json"]);
    assert!(stats.status.success(), "{stats:?}");
    drop(host);
}

#[tokio::test]
async fn the_cli_and_a_host_work_over_tls_with_a_private_ca_and_client_certificates() {
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs, &[]);
    let url = format!("rediss://127.0.0.1:{}/0?{}", redis.port, certs.query());
    a_job_runs_over(&url).await;
    // `localhost` matches the certificate's name too.
    let by_name = format!("rediss://localhost:{}/0?{}", redis.port, certs.query());
    let out = wasmq(&by_name, &["queue", "stats", Q]);
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn tls_connections_are_verified() {
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs, &[]);
    let port = redis.port;
    let refused = |url: String| {
        let out = wasmq(&url, &["queue", "stats", Q]);
        assert!(!out.status.success(), "{url}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The system's trust store does not know the test's CA.
    let client_only = format!(
        "tls_cert={}&tls_key={}",
        certs.file("client.pem"),
        certs.file("client.key")
    );
    refused(format!("rediss://127.0.0.1:{port}/0?{client_only}"));
    // The server requires a client certificate.
    refused(format!(
        "rediss://127.0.0.1:{port}/0?tls_ca={}",
        certs.file("ca.pem")
    ));
    // Certificates of another CA: neither side trusts the other's.
    let other = Certs::make();
    refused(format!("rediss://127.0.0.1:{port}/0?{}", other.query()));
    // Files that do not exist, a parameter wasmq does not know, TLS files on a plain URL: said
    // at once.
    let stderr = refused(format!(
        "rediss://127.0.0.1:{port}/0?tls_ca=/nonexistent/ca.pem"
    ));
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
    let stderr = refused(format!("rediss://127.0.0.1:{port}/0?tls_cafile=x"));
    assert!(stderr.contains("tls_cafile"), "{stderr}");
    let stderr = refused(format!("redis://127.0.0.1:{port}/0?{}", certs.query()));
    assert!(stderr.contains("rediss://"), "{stderr}");
}

#[tokio::test]
async fn a_cluster_works_over_tls() {
    let certs = Certs::make();
    let bus = free_port().to_string();
    let redis = TlsRedis::start(
        &certs,
        &[
            "--cluster-enabled",
            "yes",
            "--tls-cluster",
            "yes",
            "--cluster-port",
            &bus,
            "--cluster-announce-ip",
            "127.0.0.1",
        ],
    );
    // One node holding every slot, set up over TLS with the redis crate.
    let node = redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{}", redis.port),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: std::fs::read(certs.path("client.pem")).unwrap(),
                client_key: std::fs::read(certs.path("client.key")).unwrap(),
            }),
            root_cert: Some(std::fs::read(certs.path("ca.pem")).unwrap()),
        },
    )
    .unwrap();
    let mut conn = node.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually("the cluster to be ok", Duration::from_secs(30), || {
        let mut conn = conn.clone();
        async move {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .ok()?;
            info.contains("cluster_state:ok").then_some(())
        }
    })
    .await;
    let cluster_url = format!(
        "rediss+cluster://127.0.0.1:{}?{}",
        redis.port,
        certs.query()
    );
    a_job_runs_over(&cluster_url).await;
}
