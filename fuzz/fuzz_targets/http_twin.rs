//! Any request head a client can send: whatever the lean path carries, the general path
//! carries the same way (method, target, Host, framing and fields, order aside), and what
//! either forwards has exactly one Host and no framing field it does not own.
#![no_main]

use std::sync::{Arc, OnceLock};

use lb_core::pool::Pool;
use lb_l7::gateway::Gateway;
use lb_l7::twin;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:1"
protocol = "http"
pool = "p0"
forwarded_headers = "append"
via = true

[[pool]]
name = "p0"
backends = [{ addr = "127.0.0.1:9" }]

[[pool]]
name = "p1"
backends = [{ addr = "127.0.0.1:10" }]

[[route]]
listener = "web"
match = { path_prefix = "/api" }
pool = "p1"
strip_prefix = true

[[route]]
listener = "web"
match = { path_prefix = "/Private", case = "insensitive" }
pool = "p1"
rewrite = "/internal"
"#;

fn build(config: &str) -> Gateway {
    let (loaded, prepared) = lb_l7::gateway::load_str("fuzz.toml", config).expect("valid");
    let pools: Vec<Arc<Pool>> =
        loaded.config.pools.iter().map(|p| Arc::new(Pool::new(p, None))).collect();
    let mut gw = Gateway::build(&loaded, &prepared, 0, &pools);
    // Generated request and trace IDs from fixed bits, so both paths' are comparable.
    gw.ids = || 0x5eed;
    gw
}

/// Without and with `[tracing]` (lb's own `traceparent`).
fn gateways() -> &'static [Gateway; 2] {
    static GW: OnceLock<[Gateway; 2]> = OnceLock::new();
    GW.get_or_init(|| [build(CONFIG), build(&format!("[tracing]\n{CONFIG}"))])
}

fuzz_target!(|data: &[u8]| {
    for (traced, gw) in gateways().iter().enumerate() {
        let general = twin::general(gw, data);
        if let Some(lean) = twin::lean(gw, data) {
            assert_eq!(general, Ok(lean.clone()));
            let hosts = lean.fields.iter().filter(|(n, _)| n == "host").count();
            assert_eq!(hosts, 1);
            assert!(!lean.fields.iter().any(|(n, _)| n == "transfer-encoding"));
            if traced == 1 {
                let parents: Vec<_> =
                    lean.fields.iter().filter(|(n, _)| n == "traceparent").collect();
                assert_eq!(parents.len(), 1);
                assert!(lb_l7::trace::parse(&parents[0].1).is_some());
            }
        }
    }
});
