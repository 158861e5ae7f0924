//! A real Redis Cluster on loopback: three `redis-server --cluster-enabled yes`
//! masters, joined with `redis-cli --cluster create`, every slot covered. For
//! proving that services' keys and Lua scripts stay within one slot (hash tags).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::processes::{RedisServer, StartError};

/// A running three-master cluster; its servers are killed when dropped.
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three masters, creates the cluster and waits until every node
    /// reports `cluster_state:ok`.
    pub async fn start() -> Result<Self, StartError> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            // The cluster bus defaults to port + 10000, which may be out of
            // range or taken for an ephemeral port; give it a free one.
            let bus = crate::free_port().map_err(|e| StartError::Io("free port", e))?;
            let bus = bus.to_string();
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "5000",
                ])
                .await?,
            );
        }
        let cluster = RedisCluster { nodes };
        cluster.create().await?;
        cluster.wait_ok().await?;
        Ok(cluster)
    }

    /// Seed URLs of every node (`redis://127.0.0.1:<port>/`), for
    /// `RedisConfig::cluster_nodes`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    async fn create(&self) -> Result<(), StartError> {
        let cli = redis_cli()?;
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(cli)
                .arg("--cluster")
                .arg("create")
                .args(&addrs)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdin(Stdio::null())
                .output()
        })
        .await
        .map_err(|e| StartError::Io("redis-cli", std::io::Error::other(e)))?
        .map_err(|e| StartError::Io("redis-cli", e))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(StartError::Io(
                "redis-cli --cluster create",
                std::io::Error::other(String::from_utf8_lossy(&output.stdout).into_owned()),
            ))
        }
    }

    async fn wait_ok(&self) -> Result<(), StartError> {
        let timeout = Duration::from_secs(30);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut ok = 0;
            for node in &self.nodes {
                if let Ok(client) = redis::Client::open(node.url())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                    && let Ok(info) = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut conn)
                        .await
                    && info.contains("cluster_state:ok")
                {
                    ok += 1;
                }
            }
            if ok == self.nodes.len() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(StartError::NotReady("redis cluster", timeout))
    }
}

/// `redis-cli`: `REDIS_CLI_BIN`, `PATH`, or beside `redis-server`.
fn redis_cli() -> Result<PathBuf, StartError> {
    if let Some(path) = std::env::var_os("REDIS_CLI_BIN") {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("redis-cli"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-cli")).filter(|p| p.is_file()))
        .ok_or(StartError::Missing("redis-cli", "REDIS_CLI_BIN"))
}
