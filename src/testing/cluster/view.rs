//! What a cluster node says of the cluster (`CLUSTER NODES`), read into
//! who serves which slots and who replicates whom: what the launcher waits
//! for every node to agree on.

use std::collections::{BTreeMap, BTreeSet};

use crate::testing::poll::ask;
use crate::testing::RedisServer;

/// Who serves which slots and who replicates whom, as one node sees it
/// (`CLUSTER NODES`), leaving out nodes it thinks failing: what every node
/// must agree on.
#[derive(Debug, PartialEq)]
pub(super) struct View {
    /// By the primary's port.
    pub(super) shards: BTreeMap<u16, Shard>,
}

#[derive(Debug, Default, PartialEq)]
pub(super) struct Shard {
    /// Inclusive ranges.
    slots: Vec<(u16, u16)>,
    pub(super) replicas: Vec<u16>,
}

impl Shard {
    /// How many slots it serves.
    pub(super) fn slot_count(&self) -> u32 {
        self.slots
            .iter()
            .map(|(first, last)| u32::from(last - first) + 1)
            .sum()
    }
}

impl View {
    /// Parses `CLUSTER NODES`: a line a node, `<id> <ip:port@bus-port>
    /// <flags> <primary id or -> <ping> <pong> <epoch> <link> <slot>...`.
    fn parse(text: &str) -> Result<View, String> {
        let mut ports = BTreeMap::new();
        let mut lines = Vec::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, addr, flags, primary, _ping, _pong, _epoch, _link, slots @ ..] =
                fields.as_slice()
            else {
                return Err(format!("not a CLUSTER NODES line: {line}"));
            };
            let port = addr
                .split('@')
                .next()
                .and_then(|host_port| host_port.rsplit(':').next())
                .and_then(|port| port.parse::<u16>().ok())
                .ok_or_else(|| format!("no port in {line}"))?;
            ports.insert(*id, port);
            if !flags.contains("fail") {
                lines.push((port, *primary, slots.to_vec()));
            }
        }
        let mut shards: BTreeMap<u16, Shard> = BTreeMap::new();
        let mut replicas = BTreeSet::new();
        for (port, primary, slots) in lines {
            if primary == "-" {
                let ranges = slots
                    .iter()
                    // `[slot->-id]`: a slot on the move, not served yet.
                    .filter(|slot| !slot.starts_with('['))
                    .map(|slot| parse_range(slot))
                    .collect::<Result<Vec<_>, _>>()?;
                if !ranges.is_empty() {
                    shards.entry(port).or_default().slots = ranges;
                }
            } else if let Some(primary) = ports.get(primary) {
                replicas.insert((*primary, port));
            }
        }
        for (primary, replica) in replicas {
            if let Some(shard) = shards.get_mut(&primary) {
                shard.replicas.push(replica);
            }
        }
        Ok(View { shards })
    }

    /// The port of the primary serving `slot`, if any does.
    pub(super) fn primary_of(&self, slot: u16) -> Option<u16> {
        self.shards
            .iter()
            .find(|(_, shard)| {
                shard
                    .slots
                    .iter()
                    .any(|(first, last)| (*first..=*last).contains(&slot))
            })
            .map(|(port, _)| *port)
    }
}

pub(super) fn view_of(node: &RedisServer) -> Result<View, String> {
    let text: String = ask(node, redis::cmd("CLUSTER").arg("NODES"))?;
    View::parse(&text).map_err(|e| format!("{}: {e}", node.url()))
}

/// `5461-10922` or `5461`.
fn parse_range(text: &str) -> Result<(u16, u16), String> {
    let number = |n: &str| n.parse::<u16>().map_err(|_| format!("not a slot: {text}"));
    match text.split_once('-') {
        Some((first, last)) => Ok((number(first)?, number(last)?)),
        None => number(text).map(|slot| (slot, slot)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_leaves_out_failing_nodes_and_moving_slots() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10921 10922 [10923->-a3]
a3 127.0.0.1:7003@17003,host master,fail - 0 0 3 disconnected
b1 127.0.0.1:7004@17004 slave a1 0 0 1 connected
b2 127.0.0.1:7005@17005 slave,fail? a2 0 0 2 connected
b3 127.0.0.1:7006@17006 master - 0 0 4 connected 10923-16383
";
        let view = View::parse(text).unwrap();
        assert_eq!(view.shards.len(), 3, "{view:?}");
        assert_eq!(view.shards[&7001].replicas, vec![7004]);
        assert_eq!(
            view.shards[&7002].slots,
            vec![(5461, 10921), (10922, 10922)]
        );
        assert!(view.shards[&7002].replicas.is_empty());
        assert_eq!(view.primary_of(10922), Some(7002));
        assert_eq!(view.primary_of(16383), Some(7006));
        let served: u32 = view.shards.values().map(Shard::slot_count).sum();
        assert_eq!(served, 16384);
    }
}
