//! A read of many keys at once ([`Backend::get_many`]): one `no-writes`
//! script per Cluster slot (one in all on a single server or a Sentinel
//! primary), each key read as [`Op::get`](super::commands::Op::get) reads
//! one, bounded in bytes (`GET_MANY_SCRIPT` in `scripts.rs`). This room
//! groups the keys and puts the answers back in order; `aio.rs` sends.
//!
//! [`Backend::get_many`]: crate::backend::Backend::get_many

use std::collections::HashMap;

use super::deployment::slot;
use crate::backend::Stored;
use crate::key::Key;

/// One script's keys, in order, and their places in the keys asked for.
pub(super) type Group<'k> = (Vec<&'k Key>, Vec<usize>);

/// `keys` as the scripts that read them: one per slot in a Cluster, where
/// a script's keys must share one; elsewhere one for all.
pub(super) fn groups(keys: &[Key], cluster: bool) -> Vec<Group<'_>> {
    if !cluster {
        return vec![(keys.iter().collect(), (0..keys.len()).collect())];
    }
    let mut slots: HashMap<u16, Group<'_>> = HashMap::new();
    for (at, key) in keys.iter().enumerate() {
        let group = slots.entry(slot(key.as_str().as_bytes())).or_default();
        group.0.push(key);
        group.1.push(at);
    }
    slots.into_values().collect()
}

/// The answers of every group's script, put back in the order of the `len`
/// keys asked for.
pub(super) fn merge(len: usize, answers: Vec<(Vec<usize>, Vec<Stored>)>) -> Vec<Stored> {
    let mut out = vec![Stored::Missing; len];
    for (places, stored) in answers {
        for (at, value) in places.into_iter().zip(stored) {
            out[at] = value;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::Generation;

    /// A value that says which key it answers.
    fn generation(at: usize) -> Stored {
        Stored::Value(Generation::new(at as u64 + 1).unwrap())
    }

    #[test]
    fn a_cluster_read_is_one_group_per_slot_and_answers_come_back_in_order() {
        let keys: Vec<Key> = (0..20)
            .map(|n| Key::new([n.to_string()]).unwrap())
            .collect();
        let slot_of = |key: &Key| slot(key.as_str().as_bytes());
        let mut slots: Vec<u16> = keys.iter().map(slot_of).collect();
        slots.sort_unstable();
        slots.dedup();
        let groups = groups(&keys, true);
        assert_eq!(groups.len(), slots.len(), "one script per slot");
        for (keys, _) in &groups {
            assert!(
                keys.iter().all(|k| slot_of(k) == slot_of(keys[0])),
                "one slot each"
            );
        }
        let answers = groups
            .into_iter()
            .map(|(keys, places)| {
                let stored = places.iter().map(|&at| generation(at)).collect();
                assert_eq!(keys.len(), places.len());
                (places, stored)
            })
            .collect();
        let merged = merge(keys.len(), answers);
        let expected: Vec<Stored> = (0..20).map(generation).collect();
        assert_eq!(merged, expected);
        assert_eq!(
            super::groups(&keys, false).len(),
            1,
            "one script off a Cluster"
        );
    }
}
