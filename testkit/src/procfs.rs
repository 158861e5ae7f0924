//! Resource readings of processes from Linux `/proc`, for the benchmarks'
//! CPU and memory columns (the project's benches run services and Redis as
//! child processes and account for each). Off Linux every reading is 0.

/// Fields of `/proc/<pid>/stat` after the parenthesised command name (which
/// may itself hold spaces): index 11 is utime, 12 stime.
fn stat_fields(stat_path: &str) -> Vec<String> {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn cpu_seconds_at(stat_path: &str) -> f64 {
    let fields = stat_fields(stat_path);
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on every Linux the project targets.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu_seconds_at(&format!("/proc/{pid}/stat"))
}

/// CPU seconds (user + system) this process has used so far.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds_at("/proc/self/stat")
}

/// The parent of process `pid`, if it exists.
pub fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(&format!("/proc/{pid}/stat"))
        .get(1)
        .and_then(|p| p.parse().ok())
}

/// Resident memory of process `pid`, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_as_running_and_resident() {
        // Burn a little CPU so the reading cannot be a stale zero.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1, "keep the loop");
        assert!(own_cpu_seconds() > 0.0);
        assert!(rss_mib(std::process::id()) > 0.0);
        assert!(parent_pid(std::process::id()).is_some());
        assert_eq!(cpu_seconds(u32::MAX), 0.0, "no such process reads as 0");
    }
}
