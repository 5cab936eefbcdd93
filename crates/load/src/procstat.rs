//! CPU time and resident memory of a process, read from `/proc`.

use std::process::Command;
use std::sync::OnceLock;

use serde::Serialize;

use crate::error::LoadError;

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    /// User plus system CPU time, in microseconds (clock-tick resolution).
    pub cpu_us: u64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Clock ticks per second for `/proc/PID/stat`: what `getconf CLK_TCK` says,
/// or 100, the value on every Linux build we know of, when it says nothing.
pub fn clock_ticks_per_sec() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// Reads CPU time and RSS of `pid` now.
pub fn sample(pid: u32) -> Result<ProcSample, LoadError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| LoadError::Proc { pid, source })?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|source| LoadError::Proc { pid, source })?;
    let ticks = parse_cpu_ticks(&stat).ok_or(LoadError::ProcFormat { pid, file: "stat" })?;
    let rss_kib = parse_vm_rss_kib(&status).ok_or(LoadError::ProcFormat {
        pid,
        file: "status",
    })?;
    Ok(ProcSample {
        cpu_us: ticks.saturating_mul(1_000_000) / clock_ticks_per_sec(),
        rss_kib,
    })
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace();
    // After the command come state (field 3) .. ; utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let stat =
            "4242 (we ird) (name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1 2 3";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn vm_rss_line() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss_kib(status), Some(5120));
    }

    #[test]
    fn own_process_is_readable() {
        let reading = sample(std::process::id());
        assert!(matches!(reading, Ok(s) if s.rss_kib > 0));
    }
}
