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

use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

/// How long stopping waits for the tasks by default.
pub const STOP_WITHIN: Duration = Duration::from_secs(30);

/// Running service tasks and the token that stops them.
pub struct Services<T> {
    token: CancellationToken,
    tasks: Vec<JoinHandle<T>>,
}

impl<T> Services<T> {
    /// Tasks stopped by cancelling `token`.
    pub fn new(token: CancellationToken, tasks: Vec<JoinHandle<T>>) -> Self {
        Services { token, tasks }
    }

    /// The token the tasks watch.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Cancels the token and waits for every task, in order, each for at most
    /// [`STOP_WITHIN`]: its result, or `None` if it did not stop in time.
    pub async fn stop(&mut self) -> Vec<Option<Result<T, JoinError>>> {
        self.token.cancel();
        let mut results = Vec::new();
        for task in std::mem::take(&mut self.tasks) {
            results.push(tokio::time::timeout(STOP_WITHIN, task).await.ok());
        }
        results
    }
}

impl<T> Drop for Services<T> {
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
