//! Priority levels: how a pool's traffic splits across its levels as their members fail and
//! recover — Envoy's "priority load", so a level spills to the next one gradually instead of
//! all at once. Pure: no I/O, no clock; the caller passes each level's health and the draw.
//!
//! With `f` the pool's `overprovisioning` factor (default 1.4, as Envoy), in parts of
//! [`LOAD_SCALE`] (10 000 = 100 %):
//!
//! ```text
//! health(L) = min(100 %, f × available_weight(L) / total_weight(L))
//! total     = min(100 %, Σ health(L))
//! load(0)   = min(100 %, health(0) / total)
//! load(L)   = min(100 % − Σ load(0..L), health(L) / total)
//! ```
//!
//! so level 0 takes everything while `f × its healthy share ≥ 1` (≥ 5 of 7 members at 1.4),
//! the rest goes to level 1 by the same rule, and so on; when the levels together are below
//! 100 % (`total < 100 %`) the load is normalised across them. Integer division leaves a few
//! parts over; they go to the first level with any health, as Envoy does
//! (`source/common/upstream/load_balancer_impl.cc`, `recalculatePerPriorityState`). Envoy
//! weighs members by count unless `weighted_priority_health` is set; lb always uses the
//! configured weights (a member of weight 2 is two members' worth of capacity).

/// 100 % of a pool's traffic; health and load are in parts of it (0.01 % resolution).
pub const LOAD_SCALE: u32 = 10_000;

/// The default `overprovisioning` factor, in hundredths: Envoy's 1.4 (`overprovisioning_factor`
/// 140 in its `ClusterLoadAssignment.Policy`).
pub const DEFAULT_OVERPROVISIONING_PCT: u32 = 140;

/// A level's health: `min(100 %, factor × available / total)` in parts of [`LOAD_SCALE`],
/// with `factor_pct` the factor in hundredths (140 = 1.4). Exact (integer) arithmetic, so a
/// level is fully healthy exactly when `available × factor_pct ≥ total × 100`.
pub fn health(available: u64, total: u64, factor_pct: u32) -> u32 {
    if total == 0 {
        return 0;
    }
    let num = u128::from(available) * u128::from(factor_pct) * u128::from(LOAD_SCALE);
    let h = num / (u128::from(total) * 100);
    h.min(u128::from(LOAD_SCALE)) as u32
}

/// Each level's share of the traffic from the levels' health scores (`out[i]` for
/// `health[i]`, in parts of [`LOAD_SCALE`]); they add up to [`LOAD_SCALE`], or are all 0 when
/// no level has any health. `out` must be as long as `health`.
pub fn fill_loads(health: &[u32], out: &mut [u32]) {
    debug_assert_eq!(health.len(), out.len());
    let sum: u64 = health.iter().map(|&h| u64::from(h)).sum();
    let total = sum.min(u64::from(LOAD_SCALE));
    if total == 0 {
        out.fill(0);
        return;
    }
    let mut left = LOAD_SCALE;
    for (h, o) in health.iter().zip(out.iter_mut()) {
        let share = (u64::from(*h) * u64::from(LOAD_SCALE) / total) as u32;
        *o = share.min(left);
        left -= *o;
    }
    // Rounding leftovers go to the first level with any health (Envoy's rule).
    if let Some(i) = health.iter().position(|&h| h > 0) {
        out[i] += left;
    }
}

/// [`fill_loads`] into a new vector (status, plans, tests).
pub fn loads(health: &[u32]) -> Vec<u32> {
    let mut out = vec![0; health.len()];
    fill_loads(health, &mut out);
    out
}

/// The level a draw in `0..LOAD_SCALE` falls on: level `i` for draws from the sum of the
/// loads before it up to that plus `loads[i]`. `None` when every load is 0.
pub fn choose(loads: &[u32], draw: u32) -> Option<usize> {
    let mut upto = 0u32;
    for (i, &l) in loads.iter().enumerate() {
        upto += l;
        if draw < upto {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Envoy's documented examples (arch_overview/upstream/load_balancing/priority), with two
    /// levels of 100 members: percent healthy → percent of traffic to P0 and P1.
    #[test]
    fn envoy_two_level_table() {
        for (healthy0, healthy1, want0, want1) in [
            (100, 100, 100, 0),
            (72, 100, 100, 0),
            (71, 100, 99, 1),
            (50, 100, 70, 30),
            (25, 100, 35, 65),
            (0, 100, 0, 100),
        ] {
            let h = [health(healthy0, 100, 140), health(healthy1, 100, 140)];
            let l = loads(&h);
            assert_eq!(
                [(l[0] + 50) / 100, (l[1] + 50) / 100],
                [want0, want1],
                "P0 {healthy0}% P1 {healthy1}%"
            );
        }
    }

    /// Envoy's table with three levels, including the normalised rows (total health < 100 %).
    #[test]
    fn envoy_three_level_table() {
        for (h0, h1, h2, want) in [
            (100, 100, 100, [100, 0, 0]),
            (72, 72, 100, [100, 0, 0]),
            (71, 71, 100, [99, 1, 0]),
            (50, 50, 100, [70, 30, 0]),
            (25, 100, 100, [35, 65, 0]),
            (25, 25, 100, [35, 35, 30]),
        ] {
            let h = [
                health(h0, 100, 140),
                health(h1, 100, 140),
                health(h2, 100, 140),
            ];
            let l = loads(&h);
            let pct: Vec<u32> = l.iter().map(|x| (x + 50) / 100).collect();
            assert_eq!(pct, want, "{h0}/{h1}/{h2}");
            assert_eq!(l.iter().sum::<u32>(), LOAD_SCALE);
        }
        // Normalised: health 35 % + 35 % + 28 % = 98 %, so each gets health / 98 %. Envoy's
        // table shows 36/36/28 in whole percents; in 0.01 % it is 35.71/35.71/28.57, and the
        // one part left over by rounding goes to level 0.
        let h = [
            health(25, 100, 140),
            health(25, 100, 140),
            health(20, 100, 140),
        ];
        assert_eq!(loads(&h), [3572, 3571, 2857]);
    }

    #[test]
    fn health_is_capped_and_exact_at_the_threshold() {
        assert_eq!(health(5, 7, 140), LOAD_SCALE, "5/7 × 1.4 = 1 exactly");
        assert_eq!(health(4, 7, 140), 8000);
        assert_eq!(health(1, 3, 140), 4666);
        assert_eq!(health(0, 3, 140), 0);
        assert_eq!(health(3, 3, 100), LOAD_SCALE);
        assert_eq!(health(2, 3, 100), 6666);
        assert_eq!(health(0, 0, 140), 0, "an empty level has no health");
        assert_eq!(health(u64::MAX, u64::MAX, 1000), LOAD_SCALE, "no overflow");
    }

    #[test]
    fn nothing_healthy_means_no_level() {
        assert_eq!(loads(&[0, 0, 0]), [0, 0, 0]);
        assert_eq!(choose(&[0, 0, 0], 0), None);
    }

    #[test]
    fn choose_walks_the_cumulative_loads() {
        let l = [7000, 0, 3000];
        assert_eq!(choose(&l, 0), Some(0));
        assert_eq!(choose(&l, 6999), Some(0));
        assert_eq!(choose(&l, 7000), Some(2), "an empty level gets no draw");
        assert_eq!(choose(&l, 9999), Some(2));
    }

    /// Health scores of 1..=10 levels, each `available ≤ total`, and a factor 1.00..=10.00.
    fn levels() -> impl Strategy<Value = (Vec<(u64, u64)>, u32)> {
        (
            prop::collection::vec(
                (1u64..200).prop_flat_map(|total| (0..=total, Just(total))),
                1..=10,
            ),
            100u32..=1000,
        )
    }

    proptest! {
        #[test]
        fn loads_sum_to_all_traffic_and_follow_the_formula((lv, f) in levels()) {
            let h: Vec<u32> = lv.iter().map(|&(a, t)| health(a, t, f)).collect();
            let l = loads(&h);
            let sum: u32 = l.iter().sum();
            if h.iter().all(|&x| x == 0) {
                prop_assert_eq!(sum, 0);
                return Ok(());
            }
            prop_assert_eq!(sum, LOAD_SCALE);
            // The formula, in floating point, within the rounding of integer parts.
            let total = f64::from(h.iter().sum::<u32>().min(LOAD_SCALE));
            let mut assigned = 0.0;
            for (i, &hi) in h.iter().enumerate() {
                let want = (f64::from(hi) * f64::from(LOAD_SCALE) / total)
                    .min(f64::from(LOAD_SCALE) - assigned);
                assigned += want;
                let slack = lv.len() as f64 + 1.0;
                prop_assert!((f64::from(l[i]) - want).abs() <= slack, "level {i}: {} vs {want}", l[i]);
            }
        }

        #[test]
        fn level_zero_takes_all_while_overprovisioned((lv, f) in levels()) {
            let (a, t) = lv[0];
            let h: Vec<u32> = lv.iter().map(|&(a, t)| health(a, t, f)).collect();
            let l = loads(&h);
            if u128::from(a) * u128::from(f) >= u128::from(t) * 100 {
                prop_assert_eq!(l[0], LOAD_SCALE);
            } else {
                prop_assert!(l[0] < LOAD_SCALE || h[1..].iter().all(|&x| x == 0));
            }
        }

        /// One member of a level failing never gives that level more traffic nor takes
        /// traffic from the levels after it... (what spills from level L goes down the list).
        #[test]
        fn a_failure_only_moves_traffic_away((lv, f) in levels(), pick in any::<prop::sample::Index>()) {
            let at = pick.index(lv.len());
            prop_assume!(lv[at].0 > 0);
            let before: Vec<u32> = lv.iter().map(|&(a, t)| health(a, t, f)).collect();
            let mut after = before.clone();
            after[at] = health(lv[at].0 - 1, lv[at].1, f);
            let (lb, la) = (loads(&before), loads(&after));
            prop_assert!(la[at] <= lb[at] + lv.len() as u32, "level {at}: {} then {}", lb[at], la[at]);
            // While the pool as a whole is fully provisioned, the levels before it keep theirs.
            if after.iter().map(|&x| u64::from(x)).sum::<u64>() >= u64::from(LOAD_SCALE) {
                for i in 0..at {
                    prop_assert_eq!(la[i], lb[i], "level {} before the failure", i);
                }
                for i in at + 1..lv.len() {
                    prop_assert!(la[i] >= lb[i], "level {i} after it: {} then {}", lb[i], la[i]);
                }
            }
        }

        #[test]
        fn choose_matches_the_loads((lv, f) in levels(), draw in 0..LOAD_SCALE) {
            let h: Vec<u32> = lv.iter().map(|&(a, t)| health(a, t, f)).collect();
            let l = loads(&h);
            match choose(&l, draw) {
                None => prop_assert!(l.iter().all(|&x| x == 0)),
                Some(i) => {
                    let below: u32 = l[..i].iter().sum();
                    prop_assert!(below <= draw && draw < below + l[i]);
                }
            }
        }
    }
}
