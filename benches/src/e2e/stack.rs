//! The system under test: the service processes, their ports and configs,
//! and what the benchmark measures about the machine (CPU jiffies, stale
//! processes of an earlier run, the broker and Redis children).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use trackstream_loadgen::Secrets;

use super::LATENESS_HOURS;
use super::options::Options;

/// Busy and total jiffies of the whole machine (`/proc/stat`), for "how much of
/// the two cores was in use" during a step.
pub(crate) fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().sum();
    // idle + iowait
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// Our own child processes running `command` (the broker and Redis the harness
/// started), so their CPU is reported next to the services'.
pub(crate) fn children_named(command: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == command && trackstream_testkit::procfs::parent_pid(*pid) == Some(me)
        })
        .collect()
}

/// Service processes from an earlier run that did not end (the benchmark was
/// killed before it could stop its children). They no longer take the
/// benchmark's ports (those are chosen free per run), but they still use CPU.
pub(crate) fn stale_services(bin_dir: &Path) -> Vec<(u32, String)> {
    let bin_dir = bin_dir
        .canonicalize()
        .unwrap_or_else(|_| bin_dir.to_owned());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            let name = exe.file_name()?.to_str()?.to_owned();
            (exe.parent() == Some(bin_dir.as_path())
                && name.starts_with("trackstream-")
                && !matches!(name.as_str(), "trackstream-bench" | "trackstream-scale"))
            .then_some((pid, name))
        })
        .collect()
}

/// A service child process, stopped on drop.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) admin_port: u16,
    pub(crate) log: PathBuf,
    pub(crate) child: std::process::Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts `trackstream-<name>` from `bin_dir` with `<name>.toml` of
    /// `config_dir`, its admin listener on `admin_port` and `env` on top
    /// (`TRACKSTREAM__…` overrides: a second instance's own ports), logging to
    /// `config_dir/<name>-<admin_port>.log`.
    pub(crate) fn spawn(
        bin_dir: &Path,
        config_dir: &Path,
        name: &'static str,
        admin_port: u16,
        env: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let binary = bin_dir.join(format!("trackstream-{name}"));
        let log = config_dir.join(format!("{name}-{admin_port}.log"));
        let file = std::fs::File::create(&log)?;
        let child = std::process::Command::new(&binary)
            .arg("--config")
            .arg(config_dir.join(format!("{name}.toml")))
            .env(
                "TRACKSTREAM__ADMIN__LISTEN",
                format!("127.0.0.1:{admin_port}"),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {} (build it: benches/run.sh)", binary.display()))?;
        Ok(Service {
            name,
            admin_port,
            log,
            child,
        })
    }

    /// Asks it to stop (SIGTERM: it drains, produces what it holds and
    /// commits) and waits up to `within`; kills it after that.
    pub(crate) async fn terminate(&mut self, within: Duration) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log, for "it exited" errors.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// An error if the process is gone: its port could then be answered by
    /// something else (in the runs this guards against, services left over from
    /// a killed run, wired to another broker).
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "trackstream-{} exited ({status}); its log ends:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }
}

/// Loopback ports of one run, chosen free at start so nothing left over from an
/// earlier run can answer in place of this run's services.
pub(crate) struct Ports {
    pub(crate) http: u16,
    pub(crate) grpc: u16,
    pub(crate) admin: [u16; 4],
}

impl Ports {
    pub(crate) fn pick() -> anyhow::Result<Self> {
        let free = trackstream_testkit::free_port;
        Ok(Ports {
            http: free()?,
            grpc: free()?,
            admin: [free()?, free()?, free()?, free()?],
        })
    }
}

pub(crate) const SERVICES: [&str; 4] = ["ingest", "normalize", "detector", "notifier"];

/// Where the services' Redis is: one server, or the seed nodes of a Cluster.
pub(crate) enum RedisTarget {
    Standalone(String),
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// The `[redis]` section of a service config.
    fn section(&self) -> String {
        match self {
            RedisTarget::Standalone(url) => format!("[redis]\nurl = \"{url}\"\n"),
            RedisTarget::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
                format!("[redis]\ncluster_nodes = [{}]\n", nodes.join(", "))
            }
        }
    }
}

/// The consumers' Kafka tuning a run overrides (`None`: the services' own
/// defaults).
#[derive(Clone, Copy, Default)]
pub(crate) struct Tuning {
    pub(crate) fetch_wait_ms: Option<u64>,
    pub(crate) batch_linger_ms: Option<u64>,
    /// Predictions and lane statistics off in the detector.
    pub(crate) without_lanes: bool,
    /// The incident detector off in the detector.
    pub(crate) without_incidents: bool,
}

impl From<&Options> for Tuning {
    fn from(opts: &Options) -> Self {
        Tuning {
            fetch_wait_ms: opts.fetch_wait_ms,
            batch_linger_ms: opts.batch_linger_ms,
            without_lanes: opts.without_lanes,
            without_incidents: opts.without_incidents,
        }
    }
}

/// Writes `<service>.toml` for the four services into `dir`.
pub(crate) fn write_configs(
    dir: &Path,
    brokers: &str,
    redis: &RedisTarget,
    secrets: &Secrets,
    ports: &Ports,
    tuning: Tuning,
) -> anyhow::Result<()> {
    let mut common = format!("[kafka]\nbrokers = \"{brokers}\"\n");
    if let Some(ms) = tuning.fetch_wait_ms {
        common.push_str(&format!("fetch_wait_max = \"{ms}ms\"\n"));
    }
    if let Some(ms) = tuning.batch_linger_ms {
        common.push_str(&format!("batch_linger = \"{ms}ms\"\n"));
    }
    let redis = redis.section();
    let admin =
        |port: u16| format!("[admin]\nlisten = \"127.0.0.1:{port}\"\nlog_level = \"warn\"\n");
    let mut providers = String::new();
    for (route, settings) in secrets.provider_settings() {
        for secret in settings.secrets {
            providers.push_str(&format!(
                "[[providers.\"{route}\".secrets]]\naccount = \"{}\"\nsecret = \"{}\"\n",
                secret.account, secret.secret
            ));
        }
    }
    let merchants = "[[merchants]]\nid = \"m-bench\"\nname = \"Bench Shop\"\ntokens = [\"bench-merchant-token\"]\n";
    let [ingest, normalize, detector, notifier] = ports.admin;
    std::fs::write(
        dir.join("ingest.toml"),
        format!(
            "[http]\nlisten = \"127.0.0.1:{}\"\n{common}{redis}{}{merchants}{providers}",
            ports.http,
            admin(ingest)
        ),
    )?;
    std::fs::write(
        dir.join("normalize.toml"),
        format!("{common}{}", admin(normalize)),
    )?;
    let mut lanes = if tuning.without_lanes {
        "[forecast]\nenabled = false\n[lanes]\nenabled = false\n"
    } else {
        ""
    }
    .to_owned();
    if tuning.without_incidents {
        lanes.push_str("[incidents]\nenabled = false\n");
    }
    std::fs::write(
        dir.join("detector.toml"),
        format!(
            "{common}{redis}{}[timers]\nclock = \"event\"\nallowed_lateness = \"{LATENESS_HOURS}h\"\ntick = \"100ms\"\n{lanes}",
            admin(detector)
        ),
    )?;
    std::fs::write(
        dir.join("notifier.toml"),
        format!(
            "{common}{redis}{}[grpc]\nlisten = \"127.0.0.1:{}\"\n{merchants}",
            admin(notifier),
            ports.grpc
        ),
    )?;
    Ok(())
}

pub(crate) async fn wait_healthy(
    http: &reqwest::Client,
    service: &mut Service,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        service.check_running()?;
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{}/healthz", service.admin_port))
            .send()
            .await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "trackstream-{} not healthy on :{}",
        service.name,
        service.admin_port
    )
}

/// The four services of one run, started against the broker and Redis.
/// Field order is drop order: the services stop before their configs go.
pub(crate) struct Stack {
    pub(crate) services: Vec<Service>,
    _dir: tempfile::TempDir,
    pub(crate) ports: Ports,
    /// Name and pid of every process whose CPU and memory are reported: the
    /// services, the broker, Redis and the benchmark itself.
    pub(crate) measured: Vec<(String, u32)>,
}

impl Stack {
    /// Writes the services' configs, starts them from `opts.bin_dir` and waits
    /// until each answers `/healthz`.
    pub(crate) async fn start(
        http: &reqwest::Client,
        brokers: &str,
        redis_url: &str,
        secrets: &Secrets,
        opts: &Options,
        broker_pid: Option<u32>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports = Ports::pick()?;
        let redis = RedisTarget::Standalone(redis_url.to_owned());
        write_configs(dir.path(), brokers, &redis, secrets, &ports, opts.into())?;
        let mut services = Vec::new();
        for (name, admin_port) in SERVICES.into_iter().zip(ports.admin) {
            services.push(Service::spawn(
                &opts.bin_dir,
                dir.path(),
                name,
                admin_port,
                &[],
            )?);
        }
        for service in &mut services {
            wait_healthy(http, service).await?;
        }
        let mut measured: Vec<(String, u32)> = services
            .iter()
            .map(|s| (s.name.to_owned(), s.child.id()))
            .collect();
        if let Some(pid) = broker_pid {
            measured.push(("broker".to_owned(), pid));
        }
        if let Some(pid) = children_named("redis-server").first() {
            measured.push(("redis".to_owned(), *pid));
        }
        measured.push(("bench".to_owned(), std::process::id()));
        Ok(Stack {
            services,
            _dir: dir,
            ports,
            measured,
        })
    }

    /// An error if any service has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        for service in &mut self.services {
            service.check_running()?;
        }
        Ok(())
    }

    /// CPU seconds used so far by each measured process.
    pub(crate) fn cpu_seconds(&self) -> Vec<f64> {
        self.measured
            .iter()
            .map(|(_, pid)| trackstream_testkit::procfs::cpu_seconds(*pid))
            .collect()
    }

    /// Per measured process: name, CPU % since `before` over `elapsed`
    /// seconds, and RSS in MiB now.
    pub(crate) fn cpu_since(&self, before: &[f64], elapsed: f64) -> Vec<(String, f64, f64)> {
        self.measured
            .iter()
            .zip(before)
            .map(|((name, pid), before)| {
                (
                    name.clone(),
                    (trackstream_testkit::procfs::cpu_seconds(*pid) - before) / elapsed * 100.0,
                    trackstream_testkit::procfs::rss_mib(*pid),
                )
            })
            .collect()
    }

    /// RSS of the broker now, MiB (0 when it was not found).
    pub(crate) fn broker_rss_mib(&self) -> f64 {
        self.measured
            .iter()
            .find(|(name, _)| name == "broker")
            .map_or(0.0, |(_, pid)| trackstream_testkit::procfs::rss_mib(*pid))
    }
}

/// Warns about service processes an earlier, killed run left behind.
pub(crate) fn warn_stale(bin_dir: &Path) {
    let stale = stale_services(bin_dir);
    if !stale.is_empty() {
        eprintln!(
            "[bench] WARNING: service processes from an earlier run are still running and will take CPU: {stale:?}"
        );
    }
}

/// Busy share of the whole machine between two [`machine_jiffies`] readings, %.
pub(crate) fn machine_busy(before: (f64, f64), after: (f64, f64)) -> f64 {
    (after.0 - before.0) / (after.1 - before.1).max(1.0) * 100.0
}

/// Redis `used_memory`, MiB.
pub(crate) async fn redis_used_mib(redis_url: &str) -> anyhow::Result<f64> {
    let mut conn = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1_048_576.0)
}
