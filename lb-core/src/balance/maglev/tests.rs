use super::super::testing::*;
use super::super::*;
use super::*;
use crate::hash::ip_key;
use proptest::prelude::*;

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            id: format!("10.0.{}.{}:80", i / 250, i % 250 + 1),
            weight: 1,
        })
        .collect()
}

fn pick(t: &Maglev, v: &FakeView, key: u64) -> Option<usize> {
    let mut rng = fastrand::Rng::with_seed(0);
    t.select(Pick {
        key,
        view: v,
        tried: &Tried::default(),
        rng: &mut rng,
    })
}

fn keys(count: usize, seed: u64) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count).map(|_| rng.u64(..)).collect()
}

/// Pinned picks for a fixed config: lb processes anywhere must agree with these, so a
/// change here means sticky clients would move on upgrade.
#[test]
fn same_config_same_picks_pinned() {
    let ms = members(3);
    let t = Maglev::new(&ms, DEFAULT_TABLE_SIZE, None);
    let v = FakeView::uniform(3);
    let got: Vec<usize> = (1..=12)
        .map(|i| {
            pick(
                &t,
                &v,
                ip_key(format!("192.168.0.{i}").parse().expect("ip")),
            )
            .expect("up")
        })
        .collect();
    assert_eq!(got, PINNED);
    // And an independently built table agrees slot for slot.
    let again = Maglev::new(&ms, DEFAULT_TABLE_SIZE, None);
    assert_eq!(t.table, again.table);
}

const PINNED: [usize; 12] = [2, 1, 1, 2, 2, 2, 0, 2, 1, 2, 0, 2];

#[test]
fn rejects_non_prime_size() {
    assert!(std::panic::catch_unwind(|| Maglev::new(&members(2), 65_536, None)).is_err());
}

#[test]
fn bounded_load_spills_to_next_slot() {
    let ms = members(3);
    let t = Maglev::new(&ms, 65_537, Some(1.25));
    let v = FakeView::uniform(3);
    let key = 42;
    let home = t.owner(key).expect("owner");
    // Home backend far above the bound: the key spills.
    v.active[home].set(100);
    let got = pick(&t, &v, key).expect("some");
    assert_ne!(got, home);
    // Under the bound it stays home.
    v.active[home].set(0);
    assert_eq!(pick(&t, &v, key), Some(home));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A backend going down moves only its own keys (0% of the others), and coming back
    /// up restores every key.
    #[test]
    fn down_moves_only_its_keys(n in 2usize..20, victim in 0usize..20, seed in any::<u64>()) {
        let victim = victim % n;
        let t = Maglev::new(&members(n), DEFAULT_TABLE_SIZE, None);
        let v = FakeView::uniform(n);
        let ks = keys(20_000, seed);
        let before: Vec<_> = ks.iter().map(|&k| pick(&t, &v, k)).collect();
        v.set_up(victim, false);
        for (k, b) in ks.iter().zip(&before) {
            let now = pick(&t, &v, *k);
            if *b != Some(victim) {
                prop_assert_eq!(now, *b, "a healthy backend's key moved");
            } else {
                prop_assert!(now.is_some() && now != Some(victim));
            }
        }
        v.set_up(victim, true);
        let after: Vec<_> = ks.iter().map(|&k| pick(&t, &v, k)).collect();
        prop_assert_eq!(after, before);
    }

    /// Removing a backend from the config rebuilds the table and moves at most 1/N + 3%.
    #[test]
    fn removal_moves_at_most_1_over_n_plus_3_percent(n in 3usize..40, victim in 0usize..40, seed in any::<u64>()) {
        let victim = victim % n;
        let all = members(n);
        let mut rest = all.clone();
        rest.remove(victim);
        let t1 = Maglev::new(&all, DEFAULT_TABLE_SIZE, None);
        let t2 = Maglev::new(&rest, DEFAULT_TABLE_SIZE, None);
        let ks = keys(20_000, seed);
        let moved = ks.iter().filter(|&&k| {
            let a = &all[t1.owner(k).expect("owner")].id;
            let b = &rest[t2.owner(k).expect("owner")].id;
            a != b
        }).count();
        let frac = moved as f64 / ks.len() as f64;
        prop_assert!(frac <= 1.0 / n as f64 + 0.03, "moved {frac:.4} with n={n}");
    }

    /// Weights shape the share of keys within 1%.
    #[test]
    fn weights_respected_within_1_percent(weights in proptest::collection::vec(1u32..6, 2..6), seed in any::<u64>()) {
        let ms: Vec<Member> = weights.iter().enumerate().map(|(i, &w)| Member { id: format!("10.1.0.{}:80", i + 1), weight: w }).collect();
        let t = Maglev::new(&ms, DEFAULT_TABLE_SIZE, None);
        let v = FakeView::new(&weights);
        let mut counts = vec![0u64; weights.len()];
        for k in keys(100_000, seed) {
            counts[pick(&t, &v, k).expect("up")] += 1;
        }
        assert_shares(&counts, &weights, 0.01);
    }
}

#[test]
fn slow_start_ramps_a_backends_keys_in_once_each() {
    let t = Maglev::new(&members(4), DEFAULT_TABLE_SIZE, None);
    let v = FakeView::uniform(4);
    let keys: Vec<u64> = (0..20_000u64)
        .map(|k| ip_key(std::net::IpAddr::from((k as u32).to_be_bytes())))
        .collect();
    let owned: Vec<u64> = keys
        .iter()
        .copied()
        .filter(|&k| pick(&t, &v, k) == Some(2))
        .collect();
    let mut before: Vec<bool> = vec![false; owned.len()];
    for share in [1, 100, 250, 500, 900, 1000] {
        v.set_share(2, share);
        let now: Vec<bool> = owned.iter().map(|&k| pick(&t, &v, k) == Some(2)).collect();
        let kept = now.iter().filter(|&&b| b).count() as f64 / owned.len() as f64;
        assert!(
            (kept - f64::from(share) / 1000.0).abs() < 0.02,
            "share {share}: {kept}"
        );
        // A key that came back stays back as the share grows: each moves once.
        assert!(
            before.iter().zip(&now).all(|(&b, &n)| !b || n),
            "share {share}"
        );
        before = now;
    }
    // Keys of other backends never move while backend 2 ramps.
    v.set_share(2, 300);
    for &k in keys.iter().filter(|k| !owned.contains(k)).take(2000) {
        assert_ne!(pick(&t, &v, k), Some(2));
    }
}

#[test]
fn table_size_grows_only_past_the_default() {
    assert_eq!(table_size(1), DEFAULT_TABLE_SIZE);
    assert_eq!(
        table_size(3_276),
        DEFAULT_TABLE_SIZE,
        "configs up to here keep their table"
    );
    let m = table_size(3_277);
    assert!(
        m >= 3_277 * MIN_SLOTS_PER_BACKEND && is_prime(m as u64),
        "{m}"
    );
    assert_eq!(table_size(100_000), 2_000_003);
}

#[test]
fn every_backend_of_a_big_pool_gets_its_share_of_slots() {
    // Past 65,537 backends the fixed table left some with no slot at all.
    let n = 5_000;
    let t = Maglev::new(&members(n), table_size(n), None);
    let mut slots = vec![0usize; n];
    for &i in t.table.iter() {
        slots[i as usize] += 1;
    }
    let (lo, hi) = (slots.iter().min(), slots.iter().max());
    assert_eq!(
        (lo, hi),
        (
            Some(&MIN_SLOTS_PER_BACKEND),
            Some(&(MIN_SLOTS_PER_BACKEND + 1))
        ),
        "Maglev's rounds give each backend floor or ceil of M/N slots"
    );
}
