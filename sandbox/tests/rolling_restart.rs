//! A rolling restart of the whole pipeline under continuous traffic, the way an
//! orchestrator does it: the four services run as real binaries (child
//! processes with config files) against a real Redis and broker; each is
//! stopped in turn (SIGTERM or SIGKILL) and started again, and the next one is
//! touched only once the restarted one answers `/healthz` 200.
//!
//! Asserted:
//! - nothing is lost: every scan whose webhook was acknowledged reaches
//!   `tracking.updates`, and every parcel whose delivery was acknowledged gets
//!   its buyer's DELIVERED message on `buyer.notifications`;
//! - no service reported ready while it held no partitions: a monitor polls
//!   every service's `/healthz` and then its `/metrics`; a 200 from an
//!   incarnation none of whose scrapes so far showed partitions in every one of
//!   its consumer groups (`consumer_assigned_partitions{group}`) is a violation.
//!
//! The service binaries are built by the test itself (`cargo build --bins` of
//! the four service packages, into the same target directory): Cargo builds
//! bin targets for integration tests of their own package only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use trackstream_proto::topics;
use trackstream_proto::v1::{BuyerNotification, Milestone, ShipmentUpdate, Status};
use trackstream_runtime::CancellationToken;
use trackstream_testkit::admin::{gauges, get, healthz};
use trackstream_testkit::child::ChildProcess;
use trackstream_testkit::kafka::{TopicReader, all};
use trackstream_testkit::merchants::ACME_TOKEN;
use trackstream_testkit::processes::{Broker, RedisServer};

/// A progress deadline (a SIGKILLed member's session must expire, the group
/// rebalance, the backlog drain on a loaded 2-core machine), not a speed claim.
const WAIT: Duration = Duration::from_secs(180);
const SECRET: &str = "rolling-secret";
const SERVICES: [&str; 4] = ["ingest", "normalize", "detector", "notifier"];

/// Where the service binaries are, after building them.
fn service_binaries() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current exe: {e}"));
    // <target>/<profile>/deps/rolling_restart-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("no profile dir above {}", exe.display()))
        .to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "--bins"]);
    for service in SERVICES {
        build.args(["-p", &format!("trackstream-{service}")]);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let target_dir = profile_dir
        .parent()
        .unwrap_or_else(|| panic!("no target dir above {}", profile_dir.display()));
    build.env("CARGO_TARGET_DIR", target_dir);
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("running cargo build: {e}"));
    assert!(status.success(), "building the service binaries failed");
    profile_dir
}

/// One service: its config and log files, its admin address, the running
/// process and which incarnation it is (bumped on every restart).
struct Service {
    name: &'static str,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    admin: SocketAddr,
    child: ChildProcess,
}

impl Service {
    fn spawn(name: &'static str, binary: &Path, config: &Path, log: &Path) -> ChildProcess {
        ChildProcess::spawn(
            name,
            binary,
            [std::ffi::OsStr::new("--config"), config.as_os_str()],
            &[],
            log,
        )
        .unwrap_or_else(|e| panic!("starting {name}: {e}"))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn wait_ready(&mut self) {
        let admin = self.admin;
        let ready = trackstream_testkit::within(WAIT, || async {
            (healthz(admin).await? == 200).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "{} not ready within {WAIT:?}; log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// Stops the process (SIGTERM and waits for its exit, or SIGKILL).
    async fn stop(&mut self, graceful: bool) {
        if !graceful {
            self.child.kill();
            return;
        }
        let pid = self
            .child
            .id()
            .unwrap_or_else(|| panic!("{} gone", self.name));
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill -TERM: {e}"));
        assert!(sent.success());
        let child = &mut self.child;
        let exited = trackstream_testkit::within(WAIT, || {
            let done = child.exited();
            async move { done.then_some(()) }
        })
        .await;
        assert!(exited.is_some(), "{} ignored SIGTERM", self.name);
    }
}

/// What the monitor saw: per service and incarnation, which consumer groups
/// ever held partitions; every 200 that came before all of them did.
#[derive(Default)]
struct Watch {
    incarnation: BTreeMap<&'static str, u32>,
    ever_assigned: BTreeMap<(&'static str, u32), BTreeSet<String>>,
    violations: Vec<String>,
    probes: usize,
}

/// Samples every service's `/healthz` and `/metrics` on a fixed cadence until
/// the test drops it: an observer, not a wait — the test's own waits poll
/// conditions with deadlines.
async fn monitor(services: Vec<(&'static str, SocketAddr)>, watch: Arc<Mutex<Watch>>) {
    let mut cadence = tokio::time::interval(Duration::from_millis(50));
    loop {
        cadence.tick().await;
        for (name, admin) in &services {
            let Some(status) = healthz(*admin).await else {
                continue;
            };
            let Some((_, metrics)) = get(*admin, "/metrics").await else {
                continue;
            };
            let assigned = gauges(&metrics, "_consumer_assigned_partitions");
            let Ok(mut watch) = watch.lock() else {
                return;
            };
            watch.probes += 1;
            let incarnation = watch.incarnation.get(name).copied().unwrap_or(0);
            let ever = watch.ever_assigned.entry((name, incarnation)).or_default();
            for (group, partitions) in &assigned {
                if *partitions > 0.0 {
                    ever.insert(group.clone());
                }
            }
            let unassigned: Vec<&String> = assigned
                .iter()
                .map(|(g, _)| g)
                .filter(|g| !ever.contains(*g))
                .collect();
            if status == 200 && !unassigned.is_empty() {
                let violation = format!(
                    "{name} (incarnation {incarnation}) answered 200 while {unassigned:?} had never held a partition"
                );
                watch.violations.push(violation);
            }
        }
    }
}

/// What the traffic got acknowledged.
#[derive(Default)]
struct Acked {
    /// (waybill, status) of every acknowledged scan.
    scans: BTreeSet<(String, i32)>,
    /// Orders whose delivery scan was acknowledged.
    delivered: BTreeSet<String>,
}

/// Posts until acknowledged, as a provider or merchant retries (ingest is
/// restarted too), polling on a fixed retry interval with a deadline: false
/// if `stop` came first; fails the test if nothing was acknowledged within
/// [`WAIT`] (ingest never came back).
async fn post_until_acked(
    request: impl Fn() -> reqwest::RequestBuilder,
    stop: &CancellationToken,
) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut retry = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = retry.tick() => {}
        }
        if let Ok(response) = request().send().await
            && response.status().is_success()
        {
            return true;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no acknowledgement within {WAIT:?}"
        );
    }
}

/// Parcels one after another: register, picked up, delivered — each retried
/// until acknowledged — until `stop`.
async fn traffic(ingest: SocketAddr, stop: CancellationToken, acked: Arc<Mutex<Acked>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"));
    let mut pace = tokio::time::interval(Duration::from_millis(40));
    for i in 0.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = pace.tick() => {}
        }
        let (order, waybill) = (format!("RR-{i}"), format!("SFRR{i:06}"));
        let shipment = json!({
            "order_id": order, "carrier": "SF", "waybill": waybill,
            "buyer": {"name": "Li Lei", "phone": "13812345678", "locale": "en"}
        })
        .to_string();
        let register = || {
            http.post(format!("http://{ingest}/v1/shipments"))
                .header("authorization", format!("Bearer {ACME_TOKEN}"))
                .header("content-type", "application/json")
                .body(shipment.clone())
        };
        if !post_until_acked(register, &stop).await {
            return;
        }
        let now = Utc::now();
        for (status, code, ago) in [
            (Status::PickedUp, "picked_up", 120),
            (Status::Delivered, "delivered", 60),
        ] {
            let body = json!({
                "carrier": "sf", "waybill": waybill, "status": code,
                "occurred_at": (now - chrono::Duration::seconds(ago)).to_rfc3339(),
                "description": code, "location": {"text": "Shenzhen hub", "country": "CN"}
            })
            .to_string();
            let signature = trackstream_carriers::generic::sign(body.as_bytes(), SECRET);
            let push = || {
                http.post(format!("http://{ingest}/v1/webhooks/generic"))
                    .header("x-trackstream-signature", signature.clone())
                    .body(body.clone())
            };
            if !post_until_acked(push, &stop).await {
                return;
            }
            if let Ok(mut acked) = acked.lock() {
                acked.scans.insert((waybill.clone(), status as i32));
                if status == Status::Delivered {
                    acked.delivered.insert(order.clone());
                }
            }
        }
    }
}

fn write_configs(dir: &Path, brokers: &str, redis: &str, ports: &BTreeMap<&str, u16>) {
    let common = format!(
        "[kafka]\nbrokers = \"{brokers}\"\nproduce_timeout = \"5s\"\n\
         [redis]\nurl = \"{redis}\"\n"
    );
    let merchants = format!(
        "[[merchants]]\nid = \"m-acme\"\nname = \"Acme Live\"\ntokens = [\"{ACME_TOKEN}\"]\n"
    );
    for service in SERVICES {
        let admin = format!(
            "[admin]\nlisten = \"127.0.0.1:{}\"\nlog_format = \"json\"\n\
             log_level = \"warn,trackstream_runtime::kafka=info\"\n",
            ports[service]
        );
        let own = match service {
            "ingest" => format!(
                "[http]\nlisten = \"127.0.0.1:{}\"\n{merchants}\
                 [providers.generic]\nsecrets = [{{ account = \"rolling\", secret = \"{SECRET}\" }}]\n",
                ports["http"]
            ),
            "notifier" => format!(
                "[grpc]\nlisten = \"127.0.0.1:{}\"\n{merchants}",
                ports["grpc"]
            ),
            _ => String::new(),
        };
        // normalize has no Redis.
        let common = if service == "normalize" {
            common
                .split("[redis]")
                .next()
                .unwrap_or_default()
                .to_owned()
        } else {
            common.clone()
        };
        std::fs::write(
            dir.join(format!("{service}.toml")),
            format!("{common}{admin}{own}"),
        )
        .unwrap_or_else(|e| panic!("writing {service}.toml: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_restarted_in_turn_under_traffic_loses_nothing_and_never_claims_ready_early() {
    let bin = service_binaries();
    let redis = RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start().await.unwrap_or_else(|e| panic!("{e}"));
    let topic_list: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (*t, 4)).collect();
    trackstream_testkit::kafka::create_topics(&broker.bootstrap(), &topic_list)
        .await
        .unwrap_or_else(|e| panic!("creating topics: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let free = || trackstream_testkit::free_port().unwrap_or_else(|e| panic!("port: {e}"));
    let ports: BTreeMap<&str, u16> = SERVICES
        .into_iter()
        .chain(["http", "grpc"])
        .map(|name| (name, free()))
        .collect();
    write_configs(dir.path(), &broker.bootstrap(), &redis.url(), &ports);

    let mut services: Vec<Service> = SERVICES
        .into_iter()
        .map(|name| {
            let binary = bin.join(format!("trackstream-{name}"));
            let config = dir.path().join(format!("{name}.toml"));
            let log = dir.path().join(format!("{name}.log"));
            let child = Service::spawn(name, &binary, &config, &log);
            Service {
                name,
                binary,
                config,
                log,
                admin: SocketAddr::from(([127, 0, 0, 1], ports[name])),
                child,
            }
        })
        .collect();
    let watch = Arc::new(Mutex::new(Watch::default()));
    let monitor = tokio::spawn(monitor(
        services.iter().map(|s| (s.name, s.admin)).collect(),
        watch.clone(),
    ));
    for service in &mut services {
        service.wait_ready().await;
    }

    let stop = CancellationToken::new();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let ingest = SocketAddr::from(([127, 0, 0, 1], ports["http"]));
    let load = tokio::spawn(traffic(ingest, stop.clone(), acked.clone()));
    let delivered = || acked.lock().map(|a| a.delivered.len()).unwrap_or(0);
    trackstream_testkit::eventually(WAIT, "traffic flowing", || async {
        (delivered() >= 20).then_some(())
    })
    .await;

    // The consumers alternate: normalize and the notifier are killed outright
    // (a crashed pod), the detector and ingest stopped gracefully.
    for (index, graceful) in [(0, true), (1, false), (2, true), (3, false)] {
        let before = delivered();
        let service = &mut services[index];
        service.stop(graceful).await;
        if let Ok(mut watch) = watch.lock() {
            *watch.incarnation.entry(service.name).or_default() += 1;
        }
        service.child =
            Service::spawn(service.name, &service.binary, &service.config, &service.log);
        service.wait_ready().await;
        // Traffic kept being acknowledged across this restart.
        trackstream_testkit::eventually(WAIT, "traffic after a restart", || async {
            (delivered() >= before + 10).then_some(())
        })
        .await;
    }
    stop.cancel();
    load.await.unwrap_or_else(|e| panic!("traffic task: {e}"));
    let (scans, orders) = {
        let acked = acked.lock().unwrap_or_else(|e| panic!("{e}"));
        (acked.scans.clone(), acked.delivered.clone())
    };

    let mut updates = TopicReader::new(&broker.bootstrap(), topics::TRACKING_UPDATES);
    updates
        .until(WAIT, "every acknowledged scan on tracking.updates", |r| {
            all::<ShipmentUpdate>(r, |u| {
                let seen: BTreeSet<(String, i32)> = u
                    .iter()
                    .filter_map(|u| u.event.as_ref())
                    .map(|e| (e.waybill.clone(), e.status))
                    .collect();
                scans.is_subset(&seen)
            })
        })
        .await;
    let mut messages = TopicReader::new(&broker.bootstrap(), topics::BUYER_NOTIFICATIONS);
    messages
        .until(WAIT, "every delivered parcel's buyer message", |r| {
            all::<BuyerNotification>(r, |n| {
                let seen: BTreeSet<&str> = n
                    .iter()
                    .filter(|n| n.milestone == Milestone::Delivered as i32)
                    .map(|n| n.order_id.as_str())
                    .collect();
                orders.iter().all(|o| seen.contains(o.as_str()))
            })
        })
        .await;

    monitor.abort();
    let watch = watch.lock().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        watch.violations.is_empty(),
        "ready while holding no partitions: {:#?}",
        watch.violations
    );
    assert!(
        watch.probes > 100,
        "the monitor barely ran: {}",
        watch.probes
    );
    assert!(orders.len() >= 60, "too little traffic: {}", orders.len());
}
