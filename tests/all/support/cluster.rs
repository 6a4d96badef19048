//! A private Redis Cluster for a test: `primaries` masters and `replicas` replicas of each,
//! every node a `LocalRedis` (free loopback port, own directory holding its `nodes.conf`,
//! killed when dropped) started with `--cluster-enabled yes` and a cluster bus port of its own.
//!
//! The cluster is formed the way `redis-cli --cluster create` forms one, without its fixed
//! one-second wait: each primary takes an equal range of the 16384 slots (`CLUSTER
//! ADDSLOTSRANGE`), the first node meets the others (`CLUSTER MEET`), each replica follows its
//! primary (`CLUSTER REPLICATE`), and [`RedisCluster::start`] returns once every node reports
//! `cluster_state:ok`, knows every node, and every replica's link to its primary is up.
//! Every wait is bounded ([`FORM_DEADLINE`]).
//!
//! ```ignore
//! let cluster = RedisCluster::start(3, 1, RedisOptions::default());
//! let client = wasmq::queue::Client::connect(&cluster.url()).await?;
//! ```

use std::time::{Duration, Instant};

use wasmq::local_redis::{LocalRedis, LocalRedisOptions};

/// How long forming (or re-forming) a cluster may take.
pub const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// How long a node may go unheard before the others count it as failing, and its replica
/// takes over. Short, so a failover test is quick; long enough that a busy 2-core CI machine
/// does not fail a healthy node.
pub const NODE_TIMEOUT_MS: u64 = 2_000;

const SLOTS: u16 = 16384;

/// A running private Redis Cluster.
pub struct RedisCluster {
    /// The first `primaries` nodes started as primaries, then their replicas in order
    /// (replica `k` of primary `i` is node `primaries + i * replicas + k`).
    nodes: Vec<LocalRedis>,
    /// Each node's cluster bus port (`CLUSTER MEET` needs it: it is not port + 10000 here).
    bus_ports: Vec<u16>,
    primaries: usize,
}

/// One node's role and slots in a `CLUSTER NODES` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    pub failed: bool,
    /// The primary this node replicates, for a replica.
    pub primary_id: Option<String>,
    /// Slot ranges served, inclusive, for a primary.
    pub slots: Vec<(u16, u16)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// A blocking connection to one node.
fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(conn)
}

fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let mut conn = connect(port)?;
    cmd.query(&mut conn)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + FORM_DEADLINE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "Redis Cluster: timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses `CLUSTER NODES`.
pub fn parse_nodes(reply: &str) -> Vec<NodeView> {
    reply
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let address = fields[1].split(['@', ',']).next()?;
            let port = address.rsplit_once(':')?.1.parse().ok()?;
            let flags: Vec<&str> = fields[2].split(',').collect();
            let slots = fields[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => range.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            Some(NodeView {
                id: fields[0].to_string(),
                port,
                primary: flags.contains(&"master"),
                failed: flags.iter().any(|flag| flag.starts_with("fail")),
                primary_id: (fields[3] != "-").then(|| fields[3].to_string()),
                slots,
            })
        })
        .collect()
}

impl RedisCluster {
    /// Starts and forms a cluster. Panics (with the install command when redis-server is
    /// missing) if it cannot.
    pub fn start(primaries: usize, replicas: usize, options: LocalRedisOptions) -> RedisCluster {
        assert!(primaries >= 1);
        let mut nodes = Vec::new();
        let mut bus_ports = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            let mut options = options.clone();
            let bus_port = free_port();
            bus_ports.push(bus_port);
            options.args.extend([
                ("cluster-enabled".to_string(), "yes".to_string()),
                ("cluster-config-file".to_string(), "nodes.conf".to_string()),
                ("cluster-port".to_string(), bus_port.to_string()),
                (
                    "cluster-node-timeout".to_string(),
                    NODE_TIMEOUT_MS.to_string(),
                ),
                // A replica that has been cut off for long still takes over (the default
                // factor would keep it out after a few node timeouts).
                (
                    "cluster-replica-validity-factor".to_string(),
                    "0".to_string(),
                ),
            ]);
            match LocalRedis::start(options) {
                Ok(node) => nodes.push(node),
                Err(err) => panic!("{err}"),
            }
        }
        let cluster = RedisCluster {
            nodes,
            bus_ports,
            primaries,
        };
        cluster.form(replicas);
        cluster
    }

    fn form(&self, replicas: usize) {
        let per = SLOTS / self.primaries as u16;
        for i in 0..self.primaries {
            let first = per * i as u16;
            let last = if i + 1 == self.primaries {
                SLOTS - 1
            } else {
                first + per - 1
            };
            let () = query(
                self.nodes[i].port(),
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(first)
                    .arg(last),
            )
            .expect("CLUSTER ADDSLOTSRANGE");
        }
        let first = self.nodes[0].port();
        for (node, bus_port) in self.nodes.iter().zip(&self.bus_ports).skip(1) {
            let () = query(
                first,
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(node.port())
                    .arg(bus_port),
            )
            .expect("CLUSTER MEET");
        }
        let ids: Vec<String> = self
            .nodes
            .iter()
            .map(|node| {
                query(node.port(), redis::cmd("CLUSTER").arg("MYID")).expect("CLUSTER MYID")
            })
            .collect();
        for (i, primary_id) in ids.iter().take(self.primaries).enumerate() {
            for k in 0..replicas {
                let replica = self.primaries + i * replicas + k;
                let port = self.nodes[replica].port();
                wait_until("a replica knows its primary", || {
                    self.nodes_seen_by(port)
                        .iter()
                        .any(|node| &node.id == primary_id)
                });
                let () = query(port, redis::cmd("CLUSTER").arg("REPLICATE").arg(primary_id))
                    .expect("CLUSTER REPLICATE");
            }
        }
        self.wait_formed();
    }

    /// Waits until every running node reports `cluster_state:ok`, knows every node, and sees
    /// the same primaries; and every replica's link to its primary is up.
    pub fn wait_formed(&self) {
        let ports: Vec<u16> = self.nodes.iter().map(LocalRedis::port).collect();
        wait_until("every node reports cluster_state:ok", || {
            ports.iter().all(|&port| {
                query::<String>(port, redis::cmd("CLUSTER").arg("INFO")).is_ok_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains(&format!("cluster_known_nodes:{}\r", ports.len()))
                })
            })
        });
        wait_until("every node agrees on the primaries", || {
            let views: Vec<Vec<(u16, bool)>> = ports
                .iter()
                .map(|&port| {
                    let mut view: Vec<(u16, bool)> = self
                        .nodes_seen_by(port)
                        .iter()
                        .map(|node| (node.port, node.primary && !node.failed))
                        .collect();
                    view.sort();
                    view
                })
                .collect();
            views.windows(2).all(|pair| pair[0] == pair[1])
        });
        wait_until("every replica's link to its primary is up", || {
            self.nodes_seen_by(ports[0])
                .iter()
                .filter(|node| !node.primary)
                .all(|node| {
                    query::<String>(node.port, redis::cmd("INFO").arg("replication"))
                        .is_ok_and(|info| info.contains("master_link_status:up"))
                })
        });
    }

    /// `CLUSTER NODES` as the node on `port` sees it (empty if it does not answer).
    pub fn nodes_seen_by(&self, port: u16) -> Vec<NodeView> {
        query::<String>(port, redis::cmd("CLUSTER").arg("NODES"))
            .map(|reply| parse_nodes(&reply))
            .unwrap_or_default()
    }

    /// The cluster as its first live node sees it.
    pub fn view(&self) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|node| self.nodes_seen_by(node.port()))
            .find(|view| !view.is_empty())
            .unwrap_or_default()
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        format!("{}{}", wasmq::connection::CLUSTER_SCHEME, seeds.join(","))
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(LocalRedis::port).collect()
    }

    /// The port of the primary that serves `key` now.
    pub fn primary_of_key(&self, key: &str) -> u16 {
        self.try_primary_of_key(key)
            .expect("a live primary serves every slot")
    }

    /// The port of the live primary that serves `key` now, as the first live node sees it;
    /// `None` while that slot has none (its primary failed, no replica promoted yet).
    pub fn try_primary_of_key(&self, key: &str) -> Option<u16> {
        let live = self
            .nodes
            .iter()
            .map(LocalRedis::port)
            .find(|&port| query::<String>(port, &redis::cmd("PING")).is_ok())?;
        let slot: u16 = query(live, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).ok()?;
        self.nodes_seen_by(live)
            .into_iter()
            .find(|node| {
                node.primary
                    && !node.failed
                    && node.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .map(|node| node.port)
    }

    /// Runs `cmd` on the node on `port` (not through the cluster: that node's own answer).
    pub fn query_node<T: redis::FromRedisValue>(&self, port: u16, cmd: &redis::Cmd) -> T {
        query(port, cmd).unwrap_or_else(|err| panic!("{cmd:?} on node {port}: {err}"))
    }

    /// The node on `port`.
    pub fn node_mut(&mut self, port: u16) -> &mut LocalRedis {
        self.nodes
            .iter_mut()
            .find(|node| node.port() == port)
            .expect("a node of this cluster")
    }

    /// SIGKILLs every node.
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Stops every node gracefully.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }

    /// Starts every node again on its port and directory (its `nodes.conf` brings the
    /// cluster back as it was) and waits until the cluster is formed.
    pub fn restart(&mut self) {
        for node in &mut self.nodes {
            if let Err(err) = node.restart() {
                panic!("{err}");
            }
        }
        self.wait_formed();
    }
}
