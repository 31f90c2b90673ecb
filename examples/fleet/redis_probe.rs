//! The coordinator's view of Redis: each node's `INFO`, on a connection of
//! its own (re-dialled after a restart, and those dials counted so they can
//! be taken out of the connections the fleet made).

use std::collections::HashMap;
use std::time::Duration;

use crate::stats::{command_calls, info_fields};

/// One node's counters at one instant (zeros when it did not answer).
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    /// Every command's calls (`INFO commandstats`), summed.
    pub calls: u64,
    /// The same, per command.
    pub by_command: HashMap<String, u64>,
    /// `used_cpu_sys + used_cpu_user`, seconds.
    pub cpu: f64,
    /// `total_connections_received`.
    pub connections_received: u64,
    /// `connected_clients`.
    pub clients: u64,
    /// `run_id`: a new one after a restart, whose counters start at zero.
    pub run_id: Option<String>,
}

pub struct Probe {
    ports: Vec<u16>,
    conns: Vec<Option<redis::Connection>>,
    /// Dials this probe made, node by node.
    pub dials: Vec<u64>,
}

impl Probe {
    pub fn new(ports: Vec<u16>) -> Self {
        let n = ports.len();
        Probe {
            ports,
            conns: (0..n).map(|_| None).collect(),
            dials: vec![0; n],
        }
    }

    /// Every node's counters, in the order of the ports given.
    pub fn sample(&mut self) -> Vec<NodeSample> {
        (0..self.ports.len()).map(|i| self.node(i)).collect()
    }

    fn node(&mut self, i: usize) -> NodeSample {
        for _ in 0..2 {
            if self.conns[i].is_none() {
                let url = format!("redis://127.0.0.1:{}", self.ports[i]);
                let Ok(client) = redis::Client::open(url) else {
                    break;
                };
                self.dials[i] += 1;
                self.conns[i] = client
                    .get_connection_with_timeout(Duration::from_millis(200))
                    .ok();
                if let Some(conn) = &mut self.conns[i] {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                }
            }
            let Some(conn) = &mut self.conns[i] else {
                break;
            };
            let info: redis::RedisResult<String> = redis::cmd("INFO")
                .arg("commandstats")
                .arg("cpu")
                .arg("stats")
                .arg("clients")
                .arg("server")
                .query(conn);
            match info {
                Ok(info) => return parse(&info),
                Err(_) => self.conns[i] = None,
            }
        }
        NodeSample::default()
    }
}

fn parse(info: &str) -> NodeSample {
    let fields = info_fields(info);
    let number = |name: &str| fields.get(name).and_then(|v| v.parse::<f64>().ok());
    let by_command = command_calls(info);
    NodeSample {
        calls: by_command.values().sum(),
        by_command,
        cpu: number("used_cpu_sys").unwrap_or(0.0) + number("used_cpu_user").unwrap_or(0.0),
        connections_received: number("total_connections_received").unwrap_or(0.0) as u64,
        clients: number("connected_clients").unwrap_or(0.0) as u64,
        run_id: fields.get("run_id").cloned(),
    }
}

/// The commands the nodes ran between two samples, most first, as
/// `get 4990, ping 12` (the `n` most run; this probe's own `INFO` left in).
pub fn top_commands(before: &[NodeSample], after: &[NodeSample], n: usize) -> String {
    let mut grown_by: HashMap<&str, u64> = HashMap::new();
    for (b, a) in before.iter().zip(after) {
        let restarted = a.run_id != b.run_id;
        for (name, &calls) in &a.by_command {
            let was = if restarted {
                0
            } else {
                b.by_command.get(name).copied().unwrap_or(0)
            };
            *grown_by.entry(name).or_default() += calls.saturating_sub(was);
        }
    }
    let mut top: Vec<_> = grown_by.into_iter().filter(|&(_, n)| n > 0).collect();
    top.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
    top.iter()
        .take(n)
        .map(|(name, calls)| format!("{name} {calls}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A counter's growth from `before` to `after`, read by `counter` from
/// two samples of one node: all of `after` if the node restarted in
/// between (its counters start again from zero), nothing if it did not
/// answer.
pub fn grown<T>(before: &NodeSample, after: &NodeSample, counter: impl Fn(&NodeSample) -> T) -> T
where
    T: std::ops::Sub<Output = T> + Default + PartialOrd,
{
    if after.run_id.is_none() {
        T::default()
    } else if after.run_id != before.run_id {
        counter(after)
    } else {
        let (b, a) = (counter(before), counter(after));
        if a > b {
            a - b
        } else {
            T::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_grow_across_a_restart_from_zero() {
        let info = "# Stats\r\ntotal_connections_received:40\r\n# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:0.5\r\n\
            # Commandstats\r\ncmdstat_get:calls=10,usec=1\r\ncmdstat_ping:calls=5,usec=1\r\n\
            # Clients\r\nconnected_clients:3\r\n# Server\r\nrun_id:aaa\r\n";
        let before = parse(info);
        assert_eq!(
            (
                before.calls,
                before.cpu,
                before.connections_received,
                before.clients
            ),
            (15, 2.0, 40, 3)
        );
        let mut later = before.clone();
        later.connections_received = 55;
        assert_eq!(grown(&before, &later, |s| s.connections_received), 15);
        // Restarted: 45 since the restart, more than before but all new.
        let mut restarted = later.clone();
        restarted.run_id = Some("bbb".into());
        restarted.connections_received = 45;
        assert_eq!(grown(&later, &restarted, |s| s.connections_received), 45);
        assert_eq!(
            top_commands(
                std::slice::from_ref(&before),
                &[parse(&info.replace("calls=10", "calls=30"))],
                2
            ),
            "get 20"
        );
        // Down: nothing known, nothing counted.
        assert_eq!(grown(&later, &NodeSample::default(), |s| s.cpu), 0.0);
    }
}
