//! `trackstream incidents declare | lift`: an operator's closure ("zto closed
//! Guangzhou until Thursday 18:00") or its end, written to
//! `incidents.declared` for the incident detector (docs/INCIDENTS.md). The
//! detector links every parcel active in the area at once and keeps linking
//! parcels scanned or stuck there while the incident is open.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use prost::Message as _;
use trackstream_proto::topics;
use trackstream_proto::v1::{IncidentDeclaration, IncidentReason};
use trackstream_runtime::ident::{Ident, check_region_name};
use trackstream_runtime::kafka::{OutRecord, Producer};

use crate::Kafka;

/// `incidents ...`.
#[derive(Subcommand)]
pub enum IncidentsCommand {
    /// Declare a closure of an area (a city, or a whole province) by a carrier.
    Declare(DeclareArgs),
    /// End a declared incident (it resolves now, or at `--at`).
    Lift(LiftArgs),
}

/// Why parcels are held up.
#[derive(Clone, Copy, ValueEnum)]
pub enum Reason {
    /// Storms, typhoons, snow.
    Weather,
    /// An area closed by epidemic controls.
    EpidemicControl,
    /// A hub that cannot keep up.
    HubCongestion,
    /// The carrier's own systems or network are down.
    CarrierOutage,
    /// Not known (yet).
    Unknown,
}

impl From<Reason> for IncidentReason {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Weather => IncidentReason::Weather,
            Reason::EpidemicControl => IncidentReason::EpidemicControl,
            Reason::HubCongestion => IncidentReason::HubCongestion,
            Reason::CarrierOutage => IncidentReason::CarrierOutage,
            Reason::Unknown => IncidentReason::Unknown,
        }
    }
}

/// `incidents declare` options.
#[derive(Args)]
pub struct DeclareArgs {
    #[command(flatten)]
    kafka: Kafka,
    /// The carrier (any spelling the providers use: `zto`, `ZTO`, `zhongtong`).
    #[arg(long)]
    carrier: String,
    /// The province ("广东", "广东省", "Guangdong").
    #[arg(long)]
    province: String,
    /// The city ("广州市"); without it, the whole province.
    #[arg(long, default_value = "")]
    city: String,
    /// Why.
    #[arg(long, value_enum, default_value = "unknown")]
    reason: Reason,
    /// When the closure began (RFC 3339; default: the newest scan seen there).
    #[arg(long)]
    starts_at: Option<DateTime<Utc>>,
    /// When the carrier expects to resume (RFC 3339): buyers are told the day.
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// A note for operators (never shown to buyers; at most 512 bytes).
    #[arg(long, default_value = "")]
    note: String,
    /// Who declares it (kept on the record).
    #[arg(long = "by")]
    declared_by: String,
}

/// `incidents lift` options.
#[derive(Args)]
pub struct LiftArgs {
    #[command(flatten)]
    kafka: Kafka,
    /// The incident's id (`inc-…`, from `ListIncidents` or `tracking.incidents`).
    incident_id: String,
    /// When it ended (RFC 3339; default now).
    #[arg(long)]
    at: Option<DateTime<Utc>>,
    /// Who lifts it.
    #[arg(long = "by")]
    declared_by: String,
}

/// The declaration `args` describe, checked as ingest checks a registration.
fn declaration(args: &DeclareArgs) -> anyhow::Result<IncidentDeclaration> {
    Ident::Carrier.check(&args.carrier).context("--carrier")?;
    anyhow::ensure!(!args.province.trim().is_empty(), "--province is required");
    check_region_name(&args.province).context("--province")?;
    check_region_name(&args.city).context("--city")?;
    anyhow::ensure!(args.note.len() <= 512, "--note is over 512 bytes");
    anyhow::ensure!(
        !args.declared_by.trim().is_empty(),
        "--by names who declares it"
    );
    if let (Some(starts), Some(until)) = (args.starts_at, args.until) {
        anyhow::ensure!(until > starts, "--until is not after --starts-at");
    }
    Ok(IncidentDeclaration {
        carrier: args.carrier.trim().to_owned(),
        province: args.province.trim().to_owned(),
        city: args.city.trim().to_owned(),
        reason: IncidentReason::from(args.reason) as i32,
        starts_at: args.starts_at.map(trackstream_proto::time::to_proto),
        until: args.until.map(trackstream_proto::time::to_proto),
        note: args.note.clone(),
        lift_incident_id: String::new(),
        declared_by: args.declared_by.trim().to_owned(),
    })
}

async fn send(kafka: &Kafka, declaration: IncidentDeclaration) -> anyhow::Result<()> {
    let config = kafka.config();
    let mut registry = trackstream_runtime::telemetry::registry("trackstream_cli");
    let producer = Producer::new(&config, "trackstream-cli-incidents", &mut registry)
        .context("creating the producer")?;
    let key = if declaration.carrier.is_empty() {
        declaration.lift_incident_id.clone()
    } else {
        declaration.carrier.clone()
    };
    producer
        .send_all(vec![OutRecord::new(
            topics::INCIDENTS_DECLARED,
            key,
            declaration.encode_to_vec(),
        )])
        .await
        .with_context(|| {
            format!(
                "writing to {} on {}",
                topics::INCIDENTS_DECLARED,
                kafka.brokers
            )
        })?;
    let json = crate::decode::to_json(
        "trackstream.v1.IncidentDeclaration",
        &declaration.encode_to_vec(),
    )
    .map_err(anyhow::Error::msg)?;
    crate::emit(format_args!(
        "{}",
        serde_json::json!({ "topic": topics::INCIDENTS_DECLARED, "declaration": json })
    ))?;
    Ok(())
}

/// Runs an `incidents` command; prints the record written as one JSON line.
pub async fn run(command: IncidentsCommand) -> anyhow::Result<()> {
    match command {
        IncidentsCommand::Declare(args) => {
            let declaration = declaration(&args)?;
            send(&args.kafka, declaration).await
        }
        IncidentsCommand::Lift(args) => {
            anyhow::ensure!(
                args.incident_id.starts_with("inc-") && args.incident_id.len() <= 64,
                "{:?} is not an incident id (inc-…)",
                args.incident_id
            );
            anyhow::ensure!(
                !args.declared_by.trim().is_empty(),
                "--by names who lifts it"
            );
            let declaration = IncidentDeclaration {
                lift_incident_id: args.incident_id.clone(),
                starts_at: Some(trackstream_proto::time::to_proto(
                    args.at.unwrap_or_else(Utc::now),
                )),
                declared_by: args.declared_by.trim().to_owned(),
                ..IncidentDeclaration::default()
            };
            send(&args.kafka, declaration).await
        }
    }
}
