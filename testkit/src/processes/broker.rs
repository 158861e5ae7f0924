//! The Kafka-protocol broker tests and benchmarks run against: nisshi 0.8.1 by
//! default (tansu 0.6.0, its predecessor, when `BROKER_BIN` names it), on a free
//! loopback port, optionally behind a [`Link`] that fault tests cut and restore.
//!
//! Two ways to take the broker away, for two different faults:
//! - [`Broker::cut`] / [`Broker::restore`]: a network partition — every
//!   connection drops, the process and its state live on;
//! - [`Broker::kill`] / [`Broker::restart`]: a crash — SIGKILL, then the same
//!   binary started again on the same port and the same data directory. Only
//!   durable storage ([`Storage::Sqlite`]) keeps the log across it; a memory
//!   broker comes back empty, which no client survives (new topic ids), so
//!   [`Broker::restart`] refuses it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Guard, StartError};
use crate::link::Link;

/// Which broker program a binary is, told by its file name: their command lines
/// agree, their defaults and defects do not (docs/ARCHITECTURE.md, "Broker").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// nisshi (0.8.1): Kafka's group protocol, early fetch answers, durable SQLite.
    Nisshi,
    /// tansu (0.6.0): the predecessor, kept for side-by-side benchmarks.
    Tansu,
}

impl BrokerKind {
    /// The kind of the binary at `path` (anything not named `tansu*` is nisshi).
    pub fn of(path: &std::path::Path) -> BrokerKind {
        match path.file_name().and_then(|n| n.to_str()) {
            Some(name) if name.starts_with("tansu") => BrokerKind::Tansu,
            _ => BrokerKind::Nisshi,
        }
    }

    /// Its name, as in logs and benchmark reports.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Nisshi => "nisshi",
            BrokerKind::Tansu => "tansu",
        }
    }
}

/// Where the broker keeps its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// In memory: fast to start, gone when the process ends.
    Memory,
    /// A SQLite file in the broker's data directory: survives a SIGKILL.
    Sqlite,
}

impl Storage {
    /// Its name, as in benchmark options and reports.
    pub fn name(self) -> &'static str {
        match self {
            Storage::Memory => "memory",
            Storage::Sqlite => "sqlite",
        }
    }

    /// Parses `memory` or `sqlite`.
    pub fn from_name(name: &str) -> Option<Storage> {
        match name {
            "memory" => Some(Storage::Memory),
            "sqlite" => Some(Storage::Sqlite),
            _ => None,
        }
    }

    fn url(self, kind: BrokerKind) -> String {
        match self {
            Storage::Memory => format!("memory://{}/", kind.name()),
            // Relative to the process's working directory, its data directory.
            Storage::Sqlite => "sqlite://broker.db".to_owned(),
        }
    }
}

/// Where the data directory lives.
enum Place {
    /// tmpfs: as fast as memory, gone with the machine.
    Ram,
    /// The temp directory on disk: survives a SIGKILL as deployed storage does.
    Disk,
}

/// How long the broker's first rebalance of an empty group waits for more
/// members. Kafka's (and nisshi's) default is 3 s, which every test would pay on
/// its first join; tests start their members together or rebalance anyway.
const GROUP_INITIAL_REBALANCE_DELAY: &str = "100ms";

/// Where the broker binary is: `BROKER_BIN`, `TANSU_BIN` (older scripts), or the
/// install script's cache (nisshi first, then tansu).
pub fn broker_binary() -> Result<PathBuf, StartError> {
    for var in ["BROKER_BIN", "TANSU_BIN"] {
        if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(path));
        }
    }
    let cache = std::env::var_os("TRACKSTREAM_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("trackstream"))
        })
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/trackstream")))
        .ok_or(StartError::Missing("broker", "BROKER_BIN"))?;
    let nisshi = std::env::var("NISSHI_VERSION").unwrap_or_else(|_| "0.8.1".into());
    let tansu = std::env::var("TANSU_VERSION").unwrap_or_else(|_| "0.6.0".into());
    [
        cache.join(format!("nisshi-{nisshi}/bin/nisshi")),
        cache.join(format!("tansu-{tansu}/bin/tansu")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or(StartError::Missing("broker", "BROKER_BIN"))
}

/// A Kafka-protocol broker child process on a free loopback port.
pub struct Broker {
    /// The broker process's own port (clients use [`Broker::bootstrap`]).
    pub port: u16,
    link: Option<Link>,
    binary: PathBuf,
    kind: BrokerKind,
    storage: Storage,
    dir: tempfile::TempDir,
    guard: Guard,
}

impl Broker {
    /// Starts a broker for a test that never restarts it, behind a cuttable
    /// link, and waits until it serves metadata. nisshi stores on SQLite in
    /// RAM (`/dev/shm`): the pinned build has only the SQLite engine (its
    /// `memory://` needs the object-store feature, which doubles the build);
    /// tansu stores in memory.
    pub async fn start() -> Result<Self, StartError> {
        let binary = broker_binary()?;
        let storage = match BrokerKind::of(&binary) {
            BrokerKind::Nisshi => Storage::Sqlite,
            BrokerKind::Tansu => Storage::Memory,
        };
        Self::start_with(binary, true, storage, Place::Ram).await
    }

    /// Starts a durable (SQLite on disk) broker behind a cuttable link, for
    /// tests that kill and restart it.
    pub async fn start_durable() -> Result<Self, StartError> {
        Self::start_with(broker_binary()?, true, Storage::Sqlite, Place::Disk).await
    }

    /// Starts a broker clients reach directly (no link hop), for benchmarks;
    /// SQLite on disk, as deployed.
    pub async fn start_direct(storage: Storage) -> Result<Self, StartError> {
        Self::start_with(broker_binary()?, false, storage, Place::Disk).await
    }

    async fn start_with(
        binary: PathBuf,
        linked: bool,
        storage: Storage,
        place: Place,
    ) -> Result<Self, StartError> {
        let shm = std::path::Path::new("/dev/shm");
        let dir = match place {
            Place::Ram if shm.is_dir() => tempfile::Builder::new()
                .prefix("trackstream-broker")
                .tempdir_in(shm),
            _ => tempfile::tempdir(),
        }
        .map_err(|e| StartError::Io("tempdir", e))?;
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
            kind: BrokerKind::of(&binary),
            binary,
            storage,
            dir,
            guard: Guard(None),
        };
        broker.spawn().await?;
        Ok(broker)
    }

    /// Which broker program runs.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// Where it stores.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// The process id, while it runs (benchmarks read its CPU and memory).
    pub fn pid(&self) -> Option<u32> {
        self.guard.0.as_ref().map(|c| c.id())
    }

    /// The address clients use (the link's, if any).
    pub fn bootstrap(&self) -> String {
        match &self.link {
            Some(link) => link.addr.to_string(),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// Takes the broker away from every client: connects are refused and open
    /// connections drop, as in a network partition. No-op without a link.
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

    /// SIGKILLs the broker process: no flush, no goodbye to clients.
    pub fn kill(&mut self) {
        self.guard.stop();
    }

    /// Starts the same binary again on the same port and data directory, and
    /// waits until it serves metadata. Only a durable broker can come back with
    /// what it acknowledged; a memory one is refused.
    pub async fn restart(&mut self) -> Result<(), StartError> {
        if self.storage == Storage::Memory {
            return Err(StartError::Io(
                "broker restart",
                std::io::Error::other("a memory broker loses its log: start it durable"),
            ));
        }
        self.guard.stop();
        self.spawn().await
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
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join("broker.log"))
                .map_err(|e| StartError::Io("broker log", e))
        };
        let mut command = Command::new(&self.binary);
        command
            .args([
                "broker",
                "--listener-url",
                &listen,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", &self.storage.url(self.kind)]);
        if self.kind == BrokerKind::Nisshi {
            command.args([
                "--group-initial-rebalance-delay",
                GROUP_INITIAL_REBALANCE_DELAY,
            ]);
        }
        let log = std::env::var("BROKER_LOG")
            .or_else(|_| std::env::var("TANSU_LOG"))
            .unwrap_or_else(|_| "warn".into());
        let child = command
            .current_dir(self.dir.path())
            .env("RUST_LOG", log)
            // The broker's tracing goes to stdout: keep both in the log.
            .stdout(open()?)
            .stderr(open()?)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| StartError::Io("broker", e))?;
        self.guard = Guard(Some(child));
        let timeout = Duration::from_secs(30);
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if crate::kafka::metadata_ok(&self.bootstrap()).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(StartError::NotReady("broker", timeout))
    }
}
