//! The harness's own arithmetic and parsers, kept apart so its unit tests
//! need neither Redis nor a fleet: percentiles, the source's peak
//! concurrent loads, Redis `INFO` replies, `/proc` figures, durations.

use std::collections::HashMap;
use std::time::Duration;

/// The nearest-rank percentile `p` (0–100) of `sorted`, which must be
/// sorted ascending; `None` when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest value with at least p % of the values at
    // or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The most `[start, end)` intervals open at one instant. An interval that
/// ends exactly when another starts does not overlap it.
pub fn peak_concurrency(intervals: &[(u64, u64)]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::with_capacity(intervals.len() * 2);
    for &(start, end) in intervals {
        edges.push((start, 1));
        edges.push((end.max(start), -1));
    }
    // At one instant, ends before starts: half-open intervals.
    edges.sort_unstable();
    let (mut open, mut peak) = (0i64, 0i64);
    for (_, delta) in edges {
        open += i64::from(delta);
        peak = peak.max(open);
    }
    peak as usize
}

/// The `field:value` lines of a Redis `INFO` reply (section headers such
/// as `# CPU` and blank lines have no colon).
pub fn info_fields(info: &str) -> HashMap<String, String> {
    info.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The calls of every command in an `INFO commandstats` reply
/// (`cmdstat_get:calls=12,usec=...`), by command name.
pub fn command_calls(info: &str) -> HashMap<String, u64> {
    info.lines()
        .filter_map(|line| line.trim_end().strip_prefix("cmdstat_"))
        .filter_map(|rest| {
            let (name, stats) = rest.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// `/proc/stat`'s first line as (busy, total) jiffies: busy is everything
/// but idle and iowait.
pub fn cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The whole machine's busy share between two `cpu_jiffies` samples, in %.
pub fn busy_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    100.0 * after.0.saturating_sub(before.0) as f64 / total as f64
}

/// `VmRSS` in KiB from a `/proc/<pid>/status`.
pub fn vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `200ms`, `1s`, `1.5s`, `250us`, `0`: a duration on the command line.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?}: a unit is needed (ms, s, us)"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a number"))?;
    let seconds = match unit {
        "us" | "µs" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// `min–max` of some figures, or the one figure when they agree.
pub fn range(values: &[f64], decimals: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() {
        "-".to_string()
    } else if format!("{min:.decimals$}") == format!("{max:.decimals$}") {
        format!("{min:.decimals$}")
    } else {
        format!("{min:.decimals$}–{max:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));
        // 1,000 values: p99 is the 990th, so ten slow ones reach it.
        let mut thousand = vec![1u64; 989];
        thousand.extend([500; 11]);
        assert_eq!(percentile(&thousand, 99.0), Some(500));
        thousand[989] = 1;
        thousand.sort_unstable();
        assert_eq!(percentile(&thousand, 99.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn peak_concurrency_merges_intervals_from_every_process() {
        assert_eq!(peak_concurrency(&[]), 0);
        assert_eq!(peak_concurrency(&[(0, 10)]), 1);
        // Nested and overlapping, listed out of order as processes report.
        assert_eq!(peak_concurrency(&[(5, 8), (0, 10), (7, 12), (20, 30)]), 3);
        // Back to back: one ends as the next starts.
        assert_eq!(peak_concurrency(&[(0, 10), (10, 20), (20, 30)]), 1);
        // A thousand at once, then a thousand spread one after another.
        let herd: Vec<_> = (0..1000).map(|i| (i, 1000 + i)).collect();
        assert_eq!(peak_concurrency(&herd), 1000);
        let spread: Vec<_> = (0..1000).map(|i| (i * 10, i * 10 + 10)).collect();
        assert_eq!(peak_concurrency(&spread), 1);
    }

    #[test]
    fn commandstats_are_parsed_per_command() {
        let info = "# Commandstats\r\n\
            cmdstat_get:calls=120,usec=300,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_client|tracking:calls=7,usec=10,usec_per_call=1.43,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_info:calls=3,usec=90,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n\
            \r\n# CPU\r\nused_cpu_sys:1.5\r\n";
        let calls = command_calls(info);
        assert_eq!(calls.len(), 3);
        assert_eq!(calls["get"], 120);
        assert_eq!(calls["client|tracking"], 7);
        assert_eq!(calls.values().sum::<u64>(), 130);
        let fields = info_fields(info);
        assert_eq!(fields["used_cpu_sys"], "1.5");
        assert!(!fields.contains_key("# CPU"));
    }

    #[test]
    fn proc_figures_are_read() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(cpu_jiffies(stat), Some((150, 1000)));
        assert_eq!(busy_percent((150, 1000), (250, 1200)), 50.0);
        assert_eq!(busy_percent((1, 1), (1, 1)), 0.0);
        let status = "Name:\tfleet\nVmHWM:\t  9000 kB\nVmRSS:\t  8123 kB\n";
        assert_eq!(vm_rss_kb(status), Some(8123));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("200").is_err());
        assert!(parse_duration("2h").is_err());
        assert_eq!(range(&[1.0, 3.0, 2.0], 1), "1.0–3.0");
        assert_eq!(range(&[2.0, 2.0], 0), "2");
    }
}
