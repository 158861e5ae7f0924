//! What `/healthz` answers: a service is ready when it is not draining and
//! every [`ReadyGate`] it was started with is open — for a consuming service,
//! one gate per consumer group member (`kafka::ConsumerLoop::ready_gate`),
//! open while it holds its share of partitions and has caught up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One condition of a service's readiness, named for `/healthz`'s answer (a
/// consumer's gate is named after its group). Cloning shares the condition.
#[derive(Clone, Debug)]
pub struct ReadyGate {
    name: Arc<str>,
    open: Arc<AtomicBool>,
}

impl ReadyGate {
    /// A closed gate named `name`, and the flag that opens it.
    pub fn new(name: &str) -> (ReadyGate, Arc<AtomicBool>) {
        let open = Arc::new(AtomicBool::new(false));
        (
            ReadyGate {
                name: name.into(),
                open: open.clone(),
            },
            open,
        )
    }

    /// The gate's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the condition holds now.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

/// Whether the service is ready: up (flipped off when it starts shutting down,
/// so load balancers and rolling updates stop counting it first) and every
/// gate open.
#[derive(Clone, Default)]
pub struct Health {
    up: Arc<AtomicBool>,
    gates: Arc<Vec<ReadyGate>>,
}

impl Health {
    /// A handle that is ready once up and all `gates` are open.
    pub fn gated(gates: Vec<ReadyGate>) -> Self {
        Health {
            up: Arc::default(),
            gates: Arc::new(gates),
        }
    }

    /// Marks the service up (true) or draining (false).
    pub fn set(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }

    /// Ready now: up and every gate open.
    pub fn get(&self) -> bool {
        self.up.load(Ordering::Acquire) && self.gates.iter().all(ReadyGate::is_open)
    }

    /// Whether the service is up (not draining), whatever its gates say.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Names of the gates that are closed now, for `/healthz`'s answer.
    pub fn waiting_for(&self) -> Vec<String> {
        self.gates
            .iter()
            .filter(|g| !g.is_open())
            .map(|g| g.name().to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_up_and_every_gate_open() {
        let (a, open_a) = ReadyGate::new("group-a");
        let (b, open_b) = ReadyGate::new("group-b");
        let health = Health::gated(vec![a, b]);
        health.set(true);
        assert!(!health.get());
        assert_eq!(health.waiting_for(), vec!["group-a", "group-b"]);
        open_a.store(true, Ordering::Release);
        assert!(!health.get(), "one group still waiting");
        assert_eq!(health.waiting_for(), vec!["group-b"]);
        open_b.store(true, Ordering::Release);
        assert!(health.get());
        health.set(false);
        assert!(!health.get(), "draining");
        health.set(true);
        open_a.store(false, Ordering::Release);
        assert!(!health.get(), "a group lost its partitions");
        assert!(Health::default().is_up() == Health::default().get());
    }
}
