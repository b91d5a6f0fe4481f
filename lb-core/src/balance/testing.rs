//! A plain in-memory [`View`] for algorithm tests.

use std::cell::Cell;

use super::View;

#[derive(Debug)]
pub struct FakeView {
    pub up: Vec<Cell<bool>>,
    pub active: Vec<Cell<u64>>,
    pub weights: Vec<u32>,
    pub shares: Vec<Cell<u32>>,
}

impl FakeView {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            up: weights.iter().map(|_| Cell::new(true)).collect(),
            active: weights.iter().map(|_| Cell::new(0)).collect(),
            weights: weights.to_vec(),
            shares: weights.iter().map(|_| Cell::new(1000)).collect(),
        }
    }

    pub fn uniform(n: usize) -> Self {
        Self::new(&vec![1; n])
    }

    pub fn set_up(&self, i: usize, up: bool) {
        self.up[i].set(up);
    }

    /// Backend `i` ramps in slow start at `share` thousandths.
    pub fn set_share(&self, i: usize, share: u32) {
        self.shares[i].set(share);
    }
}

impl View for FakeView {
    fn len(&self) -> usize {
        self.weights.len()
    }
    fn available(&self, i: usize) -> bool {
        self.up[i].get()
    }
    fn active(&self, i: usize) -> u64 {
        self.active[i].get()
    }
    fn weight(&self, i: usize) -> u32 {
        self.weights[i].saturating_mul(self.shares[i].get()).max(1)
    }
    fn share(&self, i: usize) -> u32 {
        self.shares[i].get()
    }
}

/// Asserts each backend's share of `counts` is within `tol` (absolute) of its weight share.
pub fn assert_shares(counts: &[u64], weights: &[u32], tol: f64) {
    let n: u64 = counts.iter().sum();
    let w: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    for (i, (&c, &wi)) in counts.iter().zip(weights).enumerate() {
        let got = c as f64 / n as f64;
        let want = f64::from(wi) / w as f64;
        assert!(
            (got - want).abs() <= tol,
            "backend {i}: share {got:.4}, want {want:.4} (±{tol}); counts {counts:?}, weights {weights:?}"
        );
    }
}

/// One pick with no key, nothing tried, and a fixed-seed RNG.
pub fn pick(s: &dyn super::Selector, v: &FakeView) -> Option<usize> {
    pick_with(s, v, &super::Tried::default())
}

pub fn pick_with(s: &dyn super::Selector, v: &FakeView, tried: &super::Tried) -> Option<usize> {
    let mut rng = fastrand::Rng::with_seed(1);
    s.select(super::Pick {
        key: 0,
        view: v,
        tried,
        rng: &mut rng,
    })
}
