//! `lb check --diff OLD NEW [--max-moved P]` as a user runs it before a reload: what changes,
//! and for consistent-hash pools the share of keys that move, checked against keys hashed
//! through the two real tables.

mod common;

use common::*;
use lb_core::balance::{table_size, Maglev, Member};
use lb_core::hash::{hash64, KEY_SEED};

fn pool(name: &str, addrs: &[&str]) -> String {
    let backends: Vec<String> = addrs.iter().map(|a| format!("{{addr=\"{a}\"}}")).collect();
    format!(
        "[[listener]]\nname=\"front\"\nbind=\"127.0.0.1:8080\"\npool=\"web\"\n\
         [[pool]]\nname=\"web\"\nalgorithm=\"consistent-hash\"\nbackends=[{}]\n",
        backends.join(",")
    ) + &format!("# {name}\n")
}

fn members(addrs: &[&str]) -> Vec<Member> {
    addrs
        .iter()
        .map(|a| Member {
            id: a.to_string(),
            weight: 1,
        })
        .collect()
}

/// Hashes 100,000 client keys through both tables, as the data path looks them up.
fn measured(old: &[&str], new: &[&str]) -> f64 {
    let (old, new) = (members(old), members(new));
    let a = Maglev::new(&old, table_size(old.len()), None);
    let b = Maglev::new(&new, table_size(new.len()), None);
    let keys = 100_000u32;
    let moved = (0..keys)
        .map(|i| hash64(KEY_SEED, &[10, 9, (i >> 8) as u8, i as u8, (i >> 16) as u8]))
        .filter(|&k| a.owner(k).map(|i| &old[i].id) != b.owner(k).map(|i| &new[i].id))
        .count();
    moved as f64 / f64::from(keys)
}

/// The percentage in the line `web: 24.8% of keys move (ideal 25.0%)`.
fn reported(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("web: ") && l.contains("of keys move"))
        .unwrap_or_else(|| panic!("no key movement line in:\n{out}"));
    line["web: ".len()..line.find('%').expect("a percentage")]
        .parse::<f64>()
        .expect("a number")
        / 100.0
}

const FOUR: [&str; 4] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"];

#[test]
fn losing_one_of_four_maglev_members_reports_a_quarter_as_hashed_keys_measure() {
    let three = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80"];
    let old = write_config("diff-old", &pool("old", &FOUR));
    let new = write_config("diff-new", &pool("new", &three));
    let (o, n) = (old.to_str().expect("utf-8"), new.to_str().expect("utf-8"));
    let (code, out, err) = run_lb(&["check", "--diff", o, n]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pool web: - 10.0.0.3:80"), "{out}");
    assert!(out.contains("(ideal 25.0%)"), "{out}");
    let moved = reported(&out);
    assert!((moved - 0.25).abs() <= 0.01, "{out}");
    let truth = measured(&FOUR, &three);
    assert!(
        (moved - truth).abs() <= 0.01,
        "reported {moved}, hashing 100,000 keys moved {truth}"
    );

    // A bound below what moves fails the check (for CI of config repositories); above, passes.
    let (code, _, err) = run_lb(&["check", "--diff", o, n, "--max-moved", "20%"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("web moves 2") && err.contains("more than --max-moved 20.0%"));
    let (code, _, err) = run_lb(&["check", "--diff", o, n, "--max-moved", "30%"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_same_members_reordered_change_nothing() {
    let reordered = [FOUR[2], FOUR[0], FOUR[3], FOUR[1]];
    let old = write_config("same-old", &pool("old", &FOUR));
    let new = write_config("same-new", &pool("new", &reordered));
    let (o, n) = (old.to_str().expect("utf-8"), new.to_str().expect("utf-8"));
    let (code, out, err) = run_lb(&["check", "--diff", o, n, "--max-moved", "0%"]);
    assert_eq!((code, out.as_str()), (0, "no changes\n"), "{err}");
    assert_eq!(measured(&FOUR, &reordered), 0.0);
}

#[test]
fn a_bad_config_on_either_side_exits_2_and_names_the_file() {
    let good = write_config("good", &pool("good", &FOUR));
    let bad = write_config("bad", "[[pool]]\nname = 3\n");
    let (g, b) = (good.to_str().expect("utf-8"), bad.to_str().expect("utf-8"));
    for args in [["check", "--diff", g, b], ["check", "--diff", b, g]] {
        let (code, out, err) = run_lb(&args);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains(b), "the bad file is named: {err}");
        assert!(out.is_empty(), "no report from a bad config: {out}");
    }
    // --max-moved means nothing without --diff: refused, not ignored.
    let (code, _, err) = run_lb(&["check", "--config", g, "--max-moved", "5%"]);
    assert_eq!(code, 2, "{err}");
}
