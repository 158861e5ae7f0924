//! A service binary run as a child process, for crash tests: started with a
//! config file, its output captured to a log file, and killed with SIGKILL (no
//! shutdown hook runs, exactly like a crashed or OOM-killed pod).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::processes::StartError;

/// A running child process, SIGKILLed when dropped.
pub struct ChildProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ChildProcess {
    /// Spawns `program` with `args` and `env`, appending stdout and stderr to
    /// `log` (created if needed, so a restarted process continues the same log).
    pub fn spawn<I, S>(
        name: &str,
        program: &Path,
        args: I,
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Self, StartError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| StartError::Io("child log", e))
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().map_err(|e| StartError::Io("child", e))?;
        Ok(ChildProcess {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// Its name, for diagnostics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id while running.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it exited on its own (it is reaped if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(_))) | Some(Err(_)) => {
                self.child = None;
                true
            }
            Some(Ok(None)) => false,
            None => true,
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
