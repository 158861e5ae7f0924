//! One Redis connection type for standalone Redis and Redis Cluster.
//!
//! Services hold a [`RedisConn`] and run commands and Lua scripts through it without
//! knowing the topology; keys carry hash tags (`{p7}`, `{o:ORDER}`) so every script
//! touches one slot, which is what makes Cluster work unchanged.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::Error;
use crate::config::RedisConfig;

/// A cheaply clonable, auto-reconnecting connection.
#[derive(Clone)]
pub enum RedisConn {
    /// A single Redis server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Connects according to `cfg` (cluster when `cluster_nodes` is non-empty).
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, Error> {
        if cfg.cluster_nodes.is_empty() {
            let client = redis::Client::open(cfg.url.as_str())?;
            Ok(RedisConn::Single(ConnectionManager::new(client).await?))
        } else {
            let client = redis::cluster::ClusterClient::new(cfg.cluster_nodes.clone())?;
            Ok(RedisConn::Cluster(client.get_async_connection().await?))
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}
