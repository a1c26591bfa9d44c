//! What the bench reads from the operating system: the shared monotonic clock, its
//! own CPU time, the server's RSS and CPU time from `/proc`, and the open-file limit.

use std::io;

/// `CLOCK_MONOTONIC` in nanoseconds. The same clock in every process on the machine,
/// so a send time written by the publisher can be subtracted in any subscriber.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU seconds used by this process so far (all threads).
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// The 1-minute load average of the machine (`/proc/loadavg`): above the core count,
/// other processes competed with both the server and the bench.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A process observed through `/proc/<pid>`.
#[derive(Debug, Clone, Copy)]
pub struct ServerProc {
    pub pid: u32,
}

impl ServerProc {
    /// Resident set size in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> io::Result<u64> {
        self.status_bytes("VmRSS:")
    }

    /// The largest resident set size of the process's life so far, in bytes (`VmHWM`).
    pub fn peak_rss_bytes(&self) -> io::Result<u64> {
        self.status_bytes("VmHWM:")
    }

    /// A `kB` field of `/proc/<pid>/status` (`field` with its colon), in bytes.
    fn status_bytes(&self, field: &str) -> io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| io::Error::other(format!("no {field} line in /proc/PID/status")))
    }

    /// User + system CPU seconds (`utime` + `stime` of `/proc/<pid>/stat`).
    pub fn cpu_seconds(&self) -> io::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        parse_stat_cpu_ticks(&stat)
            .map(|ticks| ticks as f64 / clock_ticks_per_second())
            .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat format"))
    }
}

/// `utime + stime` in clock ticks from a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces and `)`, so fields are counted
/// from the last `)`: utime and stime are fields 14 and 15 of the line.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // After the name: field 3 (state) is index 0, so field 14 is index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_are_counted_from_the_last_parenthesis() {
        let line = "42 (ring cast) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_is_readable_through_proc() {
        let me = ServerProc {
            pid: std::process::id(),
        };
        assert!(me.rss_bytes().unwrap() > 0);
        assert!(me.peak_rss_bytes().unwrap() >= me.rss_bytes().unwrap());
        assert!(me.cpu_seconds().is_ok());
        assert!(now_ns() > 0);
    }
}
