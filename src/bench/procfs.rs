//! The server's and the kernel's side of a run, read from /proc.
//!
//! The bench cannot see inside the server, but Linux can: resident memory (VmRSS), CPU time (utime + stime)
//! and, machine-wide, the memory of TCP socket buffers (`/proc/net/sockstat`), which is reported apart from
//! the server's RSS because the kernel, not the server, owns it (and on loopback both ends' buffers count).

use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second for /proc/PID/stat times: USER_HZ, 100 on every Linux architecture we run on.
const TICKS_PER_SEC: f64 = 100.0;
/// `/proc/net/sockstat` counts memory in pages.
const PAGE_SIZE: u64 = 4096;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Reads VmRSS and CPU time of `pid` ("self" for the bench itself); `None` when the process is gone.
pub fn sample(pid: &str) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcSample { at: Instant::now(), rss_bytes: parse_vm_rss(&status)?, cpu_seconds: parse_cpu_seconds(&stat)? })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// utime + stime, fields 14 and 15 of /proc/PID/stat. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// CPU use between two samples, as a percentage of one core.
pub fn cpu_percent(from: &ProcSample, to: &ProcSample) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    100.0 * (to.cpu_seconds - from.cpu_seconds) / wall
}

/// CPU time the whole machine spent busy (all cores, everything but idle and iowait), in seconds: with the
/// server's and the bench's own time subtracted, what is left is other load, i.e. noise in the figures.
pub fn machine_busy_seconds() -> Option<f64> {
    parse_machine_busy(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_busy(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user/nice]
    let busy: u64 = ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    Some(busy as f64 / TICKS_PER_SEC)
}

/// Cores of the machine (not of this process's affinity mask: the bench is usually pinned to one).
pub fn machine_cores() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(stat.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count())
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Machine-wide TCP socket figures.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct SockStat {
    /// TCP sockets in use (both ends of every loopback connection count).
    pub tcp_inuse: u64,
    /// Memory held by TCP socket buffers, in bytes.
    pub tcp_mem_bytes: u64,
}

pub fn sockstat() -> Option<SockStat> {
    parse_sockstat(&std::fs::read_to_string("/proc/net/sockstat").ok()?)
}

fn parse_sockstat(text: &str) -> Option<SockStat> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |name: &str| -> Option<u64> {
        let at = words.iter().position(|w| *w == name)?;
        words.get(at + 1)?.parse().ok()
    };
    Some(SockStat { tcp_inuse: value("inuse")?, tcp_mem_bytes: value("mem")? * PAGE_SIZE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_stat_and_sockstat() {
        assert_eq!(parse_vm_rss("Name:\therald\nVmRSS:\t   12345 kB\n"), Some(12345 * 1024));
        let stat = "4242 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        let sock = "sockets: used 11\nTCP: inuse 7 orphan 0 tw 2 alloc 9 mem 3\nUDP: inuse 0 mem 0\n";
        let s = parse_sockstat(sock).expect("parses");
        assert_eq!((s.tcp_inuse, s.tcp_mem_bytes), (7, 3 * 4096));
        let busy = parse_machine_busy("cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 1 2 3\n").expect("parses");
        assert!((busy - 1.61).abs() < 1e-9, "{busy}");
    }

    #[test]
    fn reads_this_process() {
        let s = sample("self").expect("/proc/self is readable");
        assert!(s.rss_bytes > 0);
    }
}
