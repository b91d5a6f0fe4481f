//! Micro-benchmarks of data-path primitives: one pick per algorithm at 3/100/1000 backends,
//! a whole `Pool::next` with one or two priority levels, Maglev table builds, and parsing +
//! validating the reference config.
//! Run: `cargo bench -p lb-core --bench balance`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb_core::balance::{self, table_size, Maglev, Member, Pick, Tried, View};
use lb_core::config::Algorithm;

struct Plain {
    weights: Vec<u32>,
    active: Vec<u64>,
}

impl View for Plain {
    fn len(&self) -> usize {
        self.weights.len()
    }
    fn available(&self, _: usize) -> bool {
        true
    }
    fn active(&self, i: usize) -> u64 {
        self.active[i]
    }
    fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }
}

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            id: format!("10.{}.{}.1:80", i / 250, i % 250),
            weight: 1 + (i % 3) as u32,
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [3usize, 100, 1000] {
        let ms = members(n);
        let view = Plain {
            weights: ms.iter().map(|m| m.weight).collect(),
            active: (0..n as u64).map(|i| i % 7).collect(),
        };
        for alg in [
            Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin,
            Algorithm::LeastConnections,
            Algorithm::Random,
            Algorithm::PowerOfTwo,
            Algorithm::ConsistentHash,
        ] {
            let sel = balance::build(alg, &ms, None);
            let mut rng = fastrand::Rng::with_seed(7);
            let tried = Tried::default();
            let mut key = 0u64;
            g.bench_with_input(BenchmarkId::new(alg.name(), n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    black_box(sel.select(Pick {
                        key,
                        view: &view,
                        tried: &tried,
                        rng: &mut rng,
                    }))
                })
            });
        }
    }
    g.finish();
}

fn maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(20);
    // The table grows past 3,276 backends (`table_size`): 100,000 build 2,000,003 slots.
    for n in [10usize, 100, 1000, 10_000, 100_000] {
        let ms = members(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &ms, |b, ms| {
            b.iter(|| black_box(Maglev::new(ms, table_size(ms.len()), None)))
        });
    }
    g.finish();
}

/// `Pool::next` (level draw and pick) for a round-robin pool of three backends, then of
/// three plus three at priority 1: all up (level 0 full, the others not read), and one of
/// level 0 down (both levels' health read, a draw, the priority load).
fn pool_next(c: &mut Criterion) {
    use lb_core::backend::AdminState;
    use lb_core::pool::{Attempt, Pool};
    let mut g = c.benchmark_group("pool_next");
    let one = "{addr=\"127.0.0.1:1\"},{addr=\"127.0.0.1:2\"},{addr=\"127.0.0.1:3\"}";
    let two = format!("{one},{{addr=\"127.0.0.1:4\",priority=1}},{{addr=\"127.0.0.1:5\",priority=1}},{{addr=\"127.0.0.1:6\",priority=1}}");
    for (name, backends, down) in [
        ("one_level", one.to_string(), false),
        ("two_levels_all_up", two.clone(), false),
        ("two_levels_one_down", two, true),
    ] {
        let text = format!("[[listener]]\nname=\"l\"\nbind=\"127.0.0.1:1\"\npool=\"p\"\n[[pool]]\nname=\"p\"\nbackends=[{backends}]\n");
        let loaded = lb_core::config::load_str("b", &text).expect("valid");
        let pool = Pool::new(&loaded.config.pools[0], None);
        if down {
            pool.backends[0].set_admin_state(AdminState::Disabled);
        }
        let mut rng = fastrand::Rng::with_seed(1);
        g.bench_function(name, |b| {
            b.iter(|| black_box(pool.next(0, &mut Attempt::default(), &mut rng)))
        });
    }
    g.finish();
}

fn config_parse(c: &mut Criterion) {
    let text = include_str!("../conf/lb.toml");
    c.bench_function("config_parse_validate/reference", |b| {
        b.iter(|| black_box(lb_core::config::load_str("lb.toml", text).is_ok()))
    });
}

criterion_group!(benches, pick, pool_next, maglev_build, config_parse);
criterion_main!(benches);
