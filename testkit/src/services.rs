//! Service tasks that stop before the processes they use.
//!
//! A test holds the services it started (tasks on its runtime) next to the
//! broker and Redis they talk to (child processes, killed on drop). If the
//! broker goes first, the services' consumers are dropped only when the test's
//! runtime shuts down, against a dead broker, and librdkafka's close waits on
//! coordinator requests that can never be sent (fede1024/rust-rdkafka#509): a
//! whole test binary hung for many minutes that way. [`Services`] stops the
//! tasks on drop; declared before the broker and Redis in a struct, it drops
//! first, so the consumers close against a live broker.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trackstream_runtime::Error;

/// How long stopping waits for the tasks.
pub const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A service's task, as the services' `start` functions return it.
pub type ServiceTask = JoinHandle<Result<(), Error>>;

/// Running service tasks and the token that stops them.
pub struct Services {
    token: CancellationToken,
    tasks: Vec<ServiceTask>,
}

impl Services {
    /// Tasks stopped by cancelling `token`.
    pub fn new(token: CancellationToken, tasks: Vec<ServiceTask>) -> Self {
        Services { token, tasks }
    }

    /// Cancels the token and waits for every task, each for at most
    /// [`STOP_WITHIN`]; fails the test unless each one stopped cleanly.
    pub async fn stop(&mut self) {
        self.token.cancel();
        for task in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout(STOP_WITHIN, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => panic!("service failed: {err}"),
                Ok(Err(err)) => panic!("service panicked: {err}"),
                Err(_) => panic!("service did not stop within {STOP_WITHIN:?}"),
            }
        }
    }
}

impl Drop for Services {
    /// Cancels the token and, on a multi-thread runtime, blocks this thread
    /// until the tasks have stopped (at most [`STOP_WITHIN`]) while the
    /// workers run them. On a current-thread runtime only the cancellation is
    /// sent (blocking would stop the tasks from running). Never panics: it
    /// also runs while a failed test unwinds.
    fn drop(&mut self) {
        self.token.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        if tasks.iter().all(JoinHandle::is_finished) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let all = async {
                    for task in tasks {
                        let _ = task.await;
                    }
                };
                if tokio::time::timeout(STOP_WITHIN, all).await.is_err() {
                    eprintln!("services did not stop within {STOP_WITHIN:?} of being dropped");
                }
            });
        });
    }
}
