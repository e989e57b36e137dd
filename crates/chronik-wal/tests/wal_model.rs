//! Random appends, truncates, purges, state writes, garbage collections and reopenings,
//! checked after every step against a simple in-memory model.
mod common;

use std::collections::{BTreeMap, HashMap};

use chronik_wal::{AppendEntry, LogPos, Wal, WalOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append { group: u64, count: u64, len: usize },
    Truncate { group: u64, keep_fraction: f64 },
    Purge { group: u64, fraction: f64 },
    SetState { group: u64, key: u8, value: u8 },
    Gc,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3u64, 1..20u64, prop_oneof![0..64usize, 500..9000usize])
            .prop_map(|(group, count, len)| Op::Append { group, count, len }),
        1 => (0..3u64, 0.0..1.0f64).prop_map(|(group, keep_fraction)| Op::Truncate { group, keep_fraction }),
        2 => (0..3u64, 0.0..1.2f64).prop_map(|(group, fraction)| Op::Purge { group, fraction }),
        1 => (0..3u64, 1..3u8, any::<u8>()).prop_map(|(group, key, value)| Op::SetState { group, key, value }),
        1 => Just(Op::Gc),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default, Debug)]
struct GroupModel {
    entries: BTreeMap<u64, Vec<u8>>,
    last_purged: Option<u64>,
    states: HashMap<u8, Vec<u8>>,
}

impl GroupModel {
    fn next(&self) -> u64 {
        self.entries.keys().next_back().map(|i| i + 1).or(self.last_purged.map(|p| p + 1)).unwrap_or(1)
    }
}

/// With a page-cache window of 0, so that every check reads all sealed segments back through
/// the uncached read path.
fn opts() -> WalOptions {
    WalOptions { segment_size: 64 * 1024, page_cache_window: Some(0), ..common::small_opts() }
}

fn check(wal: &Wal, model: &HashMap<u64, GroupModel>) {
    wal.trim_page_cache();
    for (g, m) in model {
        let info = wal.group_info(*g);
        let first = m.entries.keys().next().copied();
        let last = m.entries.keys().next_back().copied().or(m.last_purged);
        assert_eq!(info.and_then(|i| i.first_index), first, "group {g} first index");
        assert_eq!(info.and_then(|i| i.last.map(|p| p.index)), last, "group {g} last index");
        assert_eq!(info.and_then(|i| i.last_purged.map(|p| p.index)), m.last_purged, "group {g} last purged");
        for (i, p) in &m.entries {
            let e = wal.read(*g, *i).unwrap().unwrap_or_else(|| panic!("group {g} entry {i} missing"));
            assert_eq!(&e.payload[..], &p[..], "group {g} entry {i} payload");
        }
        for (k, v) in &m.states {
            assert_eq!(wal.state(*g, *k).as_deref(), Some(&v[..]), "group {g} state {k}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn wal_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), opts()).unwrap().0;
        let mut model: HashMap<u64, GroupModel> = HashMap::new();
        let mut generation = 0u8;
        for op in ops {
            generation = generation.wrapping_add(1);
            match op {
                Op::Append { group, count, len } => {
                    let m = model.entry(group).or_default();
                    let start = m.next();
                    let payloads: Vec<Vec<u8>> = (start..start + count)
                        .map(|i| (0..len).map(|b| (b as u64 ^ i ^ generation as u64) as u8).collect())
                        .collect();
                    let slices: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
                    let entries: Vec<AppendEntry<'_>> = slices.iter().enumerate()
                        .map(|(k, p)| AppendEntry {
                            index: start + k as u64,
                            term: 1,
                            leader_id: 1,
                            entry_kind: 1,
                            payload: std::slice::from_ref(p),
                        })
                        .collect();
                    wal.append(group, &entries, None).unwrap();
                    for (k, p) in payloads.into_iter().enumerate() {
                        m.entries.insert(start + k as u64, p);
                    }
                }
                Op::Truncate { group, keep_fraction } => {
                    let m = model.entry(group).or_default();
                    let (Some(&first), Some(&last)) = (m.entries.keys().next(), m.entries.keys().next_back()) else {
                        continue;
                    };
                    let after = first + ((last - first) as f64 * keep_fraction) as u64;
                    wal.truncate_from(group, after + 1).unwrap();
                    m.entries.retain(|i, _| *i <= after);
                }
                Op::Purge { group, fraction } => {
                    let m = model.entry(group).or_default();
                    let (Some(&first), Some(&last)) = (m.entries.keys().next(), m.entries.keys().next_back()) else {
                        continue;
                    };
                    let upto = first + ((last - first + 1) as f64 * fraction) as u64;
                    if m.last_purged.is_some_and(|p| upto <= p) { continue }
                    wal.purge(group, LogPos { index: upto, term: 1, leader_id: 1 }).unwrap();
                    m.entries.retain(|i, _| *i > upto);
                    m.last_purged = Some(upto);
                }
                Op::SetState { group, key, value } => {
                    let v = vec![value; (value % 7) as usize + 1];
                    wal.set_state(group, key, &v, None).unwrap();
                    model.entry(group).or_default().states.insert(key, v);
                }
                Op::Gc => {
                    wal.sync().unwrap();
                    wal.collect_garbage().unwrap();
                }
                Op::Reopen => {
                    wal.close().unwrap();
                    drop(wal);
                    wal = Wal::open(dir.path(), opts()).unwrap().0;
                }
            }
            check(&wal, &model);
        }
        wal.close().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), opts()).unwrap().0;
        check(&wal, &model);
    }
}
