//! Child processes of real servers, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::link::Link;

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

struct Guard(Option<Child>);

impl Guard {
    fn stop(&mut self) {
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

/// The `tansu` Kafka-protocol broker on a free loopback port (memory storage),
/// reached through a [`Link`] that tests can cut to take the broker away from
/// every client and restore to bring it back with its state intact.
///
/// Why a link rather than killing and restarting the process: tansu 0.6.0's
/// SQLite engine panics when clients reconnect after a restart (`tansu-storage
/// lite.rs:503 "more or less than one row"`), and a restarted memory broker
/// recreates topics with new ids, which crashes librdkafka's metadata cache
/// (`rd_kafka_metadata_cache_find`, SIGSEGV). Neither is what a production
/// broker restart with durable storage does; a cut link is.
pub struct Broker {
    /// The broker process's own port (clients use [`Broker::bootstrap`]).
    pub port: u16,
    link: Option<Link>,
    binary: PathBuf,
    dir: tempfile::TempDir,
    guard: Guard,
}

/// Where the broker binary is: `TANSU_BIN`, or the install script's cache.
pub fn tansu_binary() -> Result<PathBuf, StartError> {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return Ok(PathBuf::from(path));
    }
    let version = std::env::var("TANSU_VERSION").unwrap_or_else(|_| "0.6.0".into());
    let cache = std::env::var_os("TRACKSTREAM_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("trackstream"))
        })
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/trackstream")))
        .ok_or(StartError::Missing("tansu", "TANSU_BIN"))?;
    let path = cache.join(format!("tansu-{version}/bin/tansu"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(StartError::Missing("tansu", "TANSU_BIN"))
    }
}

impl Broker {
    /// Starts a broker behind a cuttable link and waits until it serves metadata.
    pub async fn start() -> Result<Self, StartError> {
        Self::start_with(true).await
    }

    /// Starts a broker clients reach directly (no link hop), for benchmarks.
    pub async fn start_direct() -> Result<Self, StartError> {
        Self::start_with(false).await
    }

    async fn start_with(linked: bool) -> Result<Self, StartError> {
        let binary = tansu_binary()?;
        let dir = tempfile::tempdir().map_err(|e| StartError::Io("tempdir", e))?;
        let port = crate::free_port().map_err(|e| StartError::Io("free port", e))?;
        let link = if linked {
            let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            Some(
                Link::start(target)
                    .await
                    .map_err(|e| StartError::Io("broker link", e))?,
            )
        } else {
            None
        };
        let mut broker = Broker {
            port,
            link,
            binary,
            dir,
            guard: Guard(None),
        };
        broker.spawn().await?;
        Ok(broker)
    }

    /// The address clients use (the link's, if any).
    pub fn bootstrap(&self) -> String {
        match &self.link {
            Some(link) => link.addr.to_string(),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// Takes the broker away from every client: connects are refused and open
    /// connections drop, as when a broker goes down. No-op without a link.
    pub fn cut(&self) {
        if let Some(link) = &self.link {
            link.cut();
        }
    }

    /// Brings the broker back on the same address, state intact.
    pub async fn restore(&self) -> Result<(), StartError> {
        match &self.link {
            Some(link) => link
                .restore()
                .await
                .map_err(|e| StartError::Io("broker link", e)),
            None => Ok(()),
        }
    }

    /// The last `lines` lines of the broker's log, for failure diagnostics.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the broker process.
    pub fn stop(&mut self) {
        self.guard.stop();
    }

    async fn spawn(&mut self) -> Result<(), StartError> {
        let listen = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://{}", self.bootstrap());
        let storage = "memory://tansu/";
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join("broker.log"))
                .map_err(|e| StartError::Io("broker log", e))
        };
        let child = Command::new(&self.binary)
            .args([
                "broker",
                "--listener-url",
                &listen,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", storage])
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // tansu's tracing goes to stdout: keep both in the log.
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map_err(|e| StartError::Io("tansu", e))?;
        self.guard = Guard(Some(child));
        let timeout = Duration::from_secs(30);
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if crate::kafka::metadata_ok(&self.bootstrap()).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(StartError::NotReady("tansu", timeout))
    }
}
