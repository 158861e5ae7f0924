//! The Lua scripts, one `.lua` file each under `src/lua/`, every file opening
//! with its KEYS/ARGV contract and return value. The order-log append
//! (`order_log.lua`) is a function, not a script: it is prepended to the two
//! scripts that append to an order log, so sequence assignment and the log
//! entry's encoding exist once.

use redis::{Cmd, Script};
use trackstream_runtime::redis::RedisConn;

/// The one commit (a partition's folded waybills; see `lua/commit.lua`).
pub const COMMIT: &str = concat!(
    include_str!("../lua/order_log.lua"),
    include_str!("../lua/commit.lua")
);
/// One update appended in its order's slot (Redis Cluster, outbox re-delivery).
pub const SEQUENCE: &str = concat!(
    include_str!("../lua/order_log.lua"),
    include_str!("../lua/sequence.lua")
);
/// Conditional removal of a stale timer member.
pub const DROP_TIMER: &str = include_str!("../lua/drop_timer.lua");
/// Monotonic watermark raise.
pub const WATERMARK: &str = include_str!("../lua/watermark.lua");

/// The scripts, hashed once.
#[derive(Clone)]
pub struct Scripts {
    /// [`COMMIT`].
    pub commit: Script,
    /// [`SEQUENCE`].
    pub sequence: Script,
    /// [`DROP_TIMER`].
    pub drop_timer: Script,
    /// [`WATERMARK`].
    pub watermark: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            commit: Script::new(COMMIT),
            sequence: Script::new(SEQUENCE),
            drop_timer: Script::new(DROP_TIMER),
            watermark: Script::new(WATERMARK),
        }
    }
}

/// Whether `err` says the server does not have a script loaded.
pub fn is_no_script(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Runs an `EVALSHA` command built by hand (large invocations: a
/// [`Script`] invocation holds every argument in its own buffer and copies
/// them all again); on first use on a server (or after `SCRIPT FLUSH` /
/// failover) loads `source` — on every node of a cluster — and runs it again.
pub async fn eval_sha<T: redis::FromRedisValue>(
    conn: &mut RedisConn,
    cmd: &Cmd,
    source: &str,
) -> redis::RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(err) if is_no_script(&err) => {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(source)
                .query_async::<()>(conn)
                .await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}
