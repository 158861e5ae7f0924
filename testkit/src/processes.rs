//! Child processes of real servers, stopped when dropped.

mod broker;

pub use broker::{Broker, BrokerKind, Storage, broker_binary};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The binary is not installed.
    #[error("{0} not found: run deploy/local/install-deps.sh (or set {1})")]
    Missing(&'static str, &'static str),
    /// Spawning or waiting failed.
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    /// It did not become ready in time.
    #[error("{0} did not become ready within {1:?}")]
    NotReady(&'static str, Duration),
}

pub(crate) struct Guard(pub(crate) Option<Child>);

impl Guard {
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// A `redis-server` on a free loopback port, persistence off.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
    guard: Guard,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub async fn start() -> Result<Self, StartError> {
        Self::start_with(&[]).await
    }

    /// Starts one with extra arguments (e.g. `--cluster-enabled yes`).
    pub async fn start_with(extra: &[&str]) -> Result<Self, StartError> {
        let binary = std::env::var_os("REDIS_SERVER_BIN")
            .map(PathBuf::from)
            .or_else(|| which("redis-server"))
            .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
            .ok_or(StartError::Missing("redis-server", "REDIS_SERVER_BIN"))?;
        let dir = tempfile::tempdir().map_err(|e| StartError::Io("tempdir", e))?;
        let port = crate::free_port().map_err(|e| StartError::Io("free port", e))?;
        let child = Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| StartError::Io("redis-server", e))?;
        let server = RedisServer {
            port,
            _dir: dir,
            guard: Guard(Some(child)),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn wait_ready(&self) -> Result<(), StartError> {
        let timeout = Duration::from_secs(20);
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(StartError::NotReady("redis-server", timeout))
    }

    /// Kills it.
    pub fn stop(&mut self) {
        self.guard.stop();
    }
}
