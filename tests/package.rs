//! The Debian package (SPEC §6): `scripts/package.sh` builds `target/debian/lb_<version>_<arch>.deb`
//! (here from the binary cargo built for the tests), dpkg installs it, the installed `lb` says
//! its version and accepts its own default config, systemd accepts the unit, and a purge
//! removes every file again, the conffile included. Needs root and dpkg (external-tests).
#![cfg(feature = "external-tests")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Purges the package this test installed, even when an assertion failed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let o = run("dpkg", &["--purge", "lb"]);
        if !o.status.success() {
            eprintln!("dpkg --purge lb failed: {}", text(&o));
        }
    }
}

#[test]
fn package_builds_installs_checks_its_config_and_purges() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: installing a .deb needs root");
        return;
    }
    // Never replace or remove an lb someone installed on this machine.
    if run("dpkg", &["-s", "lb"]).status.success() {
        eprintln!("SKIPPED: a package named lb is already installed here; not touching it");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let built = Command::new(format!("{root}/scripts/package.sh"))
        .env("LB_BINARY", common::LB)
        .output()
        .expect("run scripts/package.sh");
    assert!(built.status.success(), "package.sh: {}", text(&built));
    let version = env!("CARGO_PKG_VERSION");
    let arch = String::from_utf8_lossy(&run("dpkg", &["--print-architecture"]).stdout)
        .trim()
        .to_string();
    let deb = format!("{root}/target/debian/lb_{version}_{arch}.deb");
    assert_eq!(
        String::from_utf8_lossy(&built.stdout).trim(),
        format!("target/debian/lb_{version}_{arch}.deb"),
        "package.sh names what it built"
    );
    assert!(Path::new(&deb).is_file(), "{deb}");

    let info = text(&run("dpkg-deb", &["-I", &deb, "conffiles"]));
    assert_eq!(info.trim(), "/etc/lb/lb.toml", "the config is a conffile");
    let contents = text(&run("dpkg-deb", &["--contents", &deb]));
    for path in [
        "./usr/bin/lb",
        "./lib/systemd/system/lb.service",
        "./etc/lb/lb.toml",
        "./usr/share/doc/lb/help.txt",
        "./usr/share/doc/lb/keepalived/keepalived.conf",
    ] {
        assert!(
            contents.contains(path),
            "{path} in the package:\n{contents}"
        );
    }

    let installed = run("dpkg", &["-i", &deb]);
    let _purge = Installed;
    assert!(installed.status.success(), "dpkg -i: {}", text(&installed));

    let v = run("/usr/bin/lb", &["--version"]);
    assert!(v.status.success());
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("lb {version}")
    );
    let check = run("/usr/bin/lb", &["check", "--config", "/etc/lb/lb.toml"]);
    assert!(
        check.status.success(),
        "lb check of the conffile: {}",
        text(&check)
    );
    assert!(
        text(&check).contains("web"),
        "the plan names the listener: {}",
        text(&check)
    );
    // systemd's own reading of the unit (directives it does not know, a bad ExecStart path).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let verify = run(
            "systemd-analyze",
            &["verify", "/lib/systemd/system/lb.service"],
        );
        let out = text(&verify);
        assert!(
            verify.status.success() && !out.contains("Unknown key"),
            "systemd-analyze verify: {out}"
        );
    }

    drop(_purge);
    assert!(!run("dpkg", &["-s", "lb"]).status.success(), "purged");
    for gone in [
        "/usr/bin/lb",
        "/etc/lb/lb.toml",
        "/lib/systemd/system/lb.service",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left behind after purge");
    }
}
