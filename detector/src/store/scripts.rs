//! The Lua scripts, one `.lua` file each under `src/lua/`, every file opening
//! with its KEYS/ARGV contract and return value. The order-log append is
//! `runtime::order_log`'s (`append_update`, a function prepended to the
//! commit, and `append_one`, the one-update script), so sequence assignment
//! and the log entry's encoding exist once, beside the log's layout.

use std::sync::LazyLock;

use redis::{Cmd, Script};
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;

/// The one commit (a partition's folded waybills; see `lua/commit.lua`), with
/// the order log's append function in front.
pub static COMMIT: LazyLock<String> =
    LazyLock::new(|| order_log::with_append(include_str!("../lua/commit.lua")));
/// Conditional removal of a stale timer member.
pub const DROP_TIMER: &str = include_str!("../lua/drop_timer.lua");
/// Monotonic watermark raise.
pub const WATERMARK: &str = include_str!("../lua/watermark.lua");

/// The scripts, hashed once.
#[derive(Clone)]
pub struct Scripts {
    /// [`COMMIT`].
    pub commit: Script,
    /// [`DROP_TIMER`].
    pub drop_timer: Script,
    /// [`WATERMARK`].
    pub watermark: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            commit: Script::new(&COMMIT),
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
