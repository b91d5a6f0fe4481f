//! The parked connections' bookkeeping, apart from any I/O: a slot per entry named by a token
//! (the slot's index and a generation, so a stale wake cannot take a later entry of the same
//! slot), the deadlines in order, and the groups that end together. Slots come in chunks that
//! never move: no doubling (half of it unused) and no copying as the table grows.

use std::collections::{BTreeSet, HashMap};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A slot's index in the low half, its generation in the high half.
pub type Token = u64;

/// Slots per chunk.
const CHUNK: usize = 256;

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    entry: Option<Entry<T>>,
}

#[derive(Debug)]
struct Entry<T> {
    item: T,
    deadline: Instant,
    group: usize,
}

#[derive(Debug)]
struct Group {
    members: usize,
    /// Cancelled when the group has no member left: its watcher stops.
    gone: CancellationToken,
}

#[derive(Debug)]
pub struct Table<T> {
    chunks: Vec<Box<[Slot<T>]>>,
    free: Vec<u32>,
    deadlines: BTreeSet<(Instant, Token)>,
    groups: HashMap<usize, Group>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            free: Vec::new(),
            deadlines: BTreeSet::new(),
            groups: HashMap::new(),
        }
    }
}

impl<T> Table<T> {
    /// Keeps `item` until `deadline`, in `group`. The group's `gone` token comes back when the
    /// group is new: its watcher must be started (and it stops once that token is cancelled).
    pub fn insert(
        &mut self,
        item: T,
        deadline: Instant,
        group: usize,
    ) -> (Token, Option<CancellationToken>) {
        if self.free.is_empty() {
            let base = self.chunks.len() * CHUNK;
            self.chunks.push(
                (0..CHUNK)
                    .map(|_| Slot {
                        generation: 0,
                        entry: None,
                    })
                    .collect(),
            );
            // Lowest index taken first.
            self.free.extend(
                (base..base + CHUNK)
                    .rev()
                    .map(|i| u32::try_from(i).expect("fewer than 2^32 parked connections")),
            );
        }
        let index = self.free.pop().expect("a free slot");
        let slot = self.slot_mut(index as usize).expect("a slot");
        slot.entry = Some(Entry {
            item,
            deadline,
            group,
        });
        let token = (u64::from(slot.generation) << 32) | u64::from(index);
        self.deadlines.insert((deadline, token));
        let mut new = None;
        let g = self.groups.entry(group).or_insert_with(|| {
            let gone = CancellationToken::new();
            new = Some(gone.clone());
            Group { members: 0, gone }
        });
        g.members += 1;
        (token, new)
    }

    fn slot(&self, index: usize) -> Option<&Slot<T>> {
        self.chunks.get(index / CHUNK).map(|c| &c[index % CHUNK])
    }

    fn slot_mut(&mut self, index: usize) -> Option<&mut Slot<T>> {
        self.chunks
            .get_mut(index / CHUNK)
            .map(|c| &mut c[index % CHUNK])
    }

    /// The entry `token` names, if it is still parked.
    pub fn get(&self, token: Token) -> Option<&T> {
        let (index, generation) = split(token);
        let slot = self.slot(index)?;
        (slot.generation == generation)
            .then_some(slot.entry.as_ref())
            .flatten()
            .map(|e| &e.item)
    }

    /// Takes the entry `token` names, if it is still parked.
    pub fn take(&mut self, token: Token) -> Option<T> {
        self.take_timed(token).map(|(item, _)| item)
    }

    /// Takes the entry `token` names, with its deadline, if it is still parked.
    pub fn take_timed(&mut self, token: Token) -> Option<(T, Instant)> {
        let (index, generation) = split(token);
        let slot = self.slot_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.deadlines.remove(&(entry.deadline, token));
        if let Some(g) = self.groups.get_mut(&entry.group) {
            g.members -= 1;
            if g.members == 0 {
                g.gone.cancel();
                self.groups.remove(&entry.group);
            }
        }
        Some((entry.item, entry.deadline))
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Takes every entry whose deadline is `now` or earlier.
    pub fn expire(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(&(at, token)) = self.deadlines.first() {
            if at > now {
                break;
            }
            out.extend(self.take(token));
        }
        out
    }

    /// Takes every entry of `group`.
    pub fn close_group(&mut self, group: usize) -> Vec<T> {
        let tokens: Vec<Token> = self
            .deadlines
            .iter()
            .map(|&(_, t)| t)
            .filter(|&t| {
                let (i, _) = split(t);
                self.slot(i)
                    .and_then(|s| s.entry.as_ref())
                    .is_some_and(|e| e.group == group)
            })
            .collect();
        tokens.into_iter().filter_map(|t| self.take(t)).collect()
    }

    /// Takes every entry.
    pub fn clear(&mut self) -> Vec<T> {
        let tokens: Vec<Token> = self.deadlines.iter().map(|&(_, t)| t).collect();
        tokens.into_iter().filter_map(|t| self.take(t)).collect()
    }

    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }
}

fn split(token: Token) -> (usize, u32) {
    ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_token_takes_its_own_entry_once_and_never_a_later_one() {
        let t0 = Instant::now();
        let mut t = Table::default();
        let (a, new) = t.insert("a", t0 + Duration::from_secs(5), 1);
        assert!(new.is_some());
        assert_eq!(t.take(a), Some("a"));
        assert_eq!(t.take(a), None);
        // The slot is used again, under a new generation: the old token is stale.
        let (b, _) = t.insert("b", t0 + Duration::from_secs(5), 1);
        assert_eq!(split(a).0, split(b).0);
        assert_ne!(a, b);
        assert_eq!(t.take(a), None);
        assert_eq!(t.get(b), Some(&"b"));
        assert_eq!(t.take(b), Some("b"));
        assert!(t.is_empty());
        // A token naming no slot at all.
        assert_eq!(t.take(u64::MAX), None);
    }

    #[test]
    fn deadlines_expire_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut t = Table::default();
        t.insert(3, t0 + Duration::from_secs(3), 1);
        t.insert(1, t0 + Duration::from_secs(1), 1);
        let (two, _) = t.insert(2, t0 + Duration::from_secs(2), 1);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.expire(t0), Vec::<i32>::new());
        // One woken before its deadline is gone from the order too.
        assert_eq!(t.take(two), Some(2));
        assert_eq!(t.expire(t0 + Duration::from_secs(2)), vec![1]);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(t.expire(t0 + Duration::from_secs(9)), vec![3]);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_group_is_announced_once_and_gone_with_its_last_member() {
        let t0 = Instant::now();
        let mut t = Table::default();
        let (a, watch) = t.insert('a', t0, 7);
        let watch = watch.expect("a new group");
        let (_, again) = t.insert('b', t0 + Duration::from_secs(1), 7);
        assert!(again.is_none());
        let (_, other) = t.insert('x', t0, 8);
        assert!(other.is_some());
        t.take(a);
        assert!(!watch.is_cancelled());
        let mut closed = t.close_group(7);
        closed.sort_unstable();
        assert_eq!(closed, vec!['b']);
        assert!(watch.is_cancelled());
        assert_eq!(t.len(), 1);
        // The key may come back as a new group.
        let (_, back) = t.insert('c', t0, 7);
        assert!(back.is_some());
        assert_eq!(t.clear().len(), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn many_entries_keep_their_own_deadlines_and_groups() {
        // A model check: each entry comes back exactly once, by whichever way it leaves.
        let t0 = Instant::now();
        let mut t = Table::default();
        let mut tokens = Vec::new();
        for i in 0..1000u32 {
            let (tok, _) = t.insert(
                i,
                t0 + Duration::from_millis(u64::from(i % 97)),
                (i % 3) as usize,
            );
            tokens.push(tok);
        }
        let mut seen = vec![false; 1000];
        for tok in tokens.iter().step_by(5) {
            let i = t.take(*tok).expect("parked");
            assert!(!std::mem::replace(&mut seen[i as usize], true));
        }
        for i in t.close_group(1) {
            assert_eq!(i % 3, 1);
            assert!(!std::mem::replace(&mut seen[i as usize], true));
        }
        for i in t.expire(t0 + Duration::from_millis(50)) {
            assert!(i % 97 <= 50);
            assert!(!std::mem::replace(&mut seen[i as usize], true));
        }
        for i in t.clear() {
            assert!(!std::mem::replace(&mut seen[i as usize], true));
        }
        assert!(seen.iter().all(|&s| s));
        assert!(t.is_empty() && t.groups.is_empty());
    }
}
