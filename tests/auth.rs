//! Authentication policies through the real binary: guessing basic-auth passwords is
//! bounded in CPU and leaves other users served.

mod common;

use common::origin::{responses, Origin};
use common::*;

/// lb's CPU time so far (user + system, all threads), from /proc/PID/stat, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let after = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    let per_second: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0);
    ticks / per_second
}

fn basic(user: &str, password: &str) -> String {
    let token = lb_l7::upgrade::base64(format!("{user}:{password}").as_bytes());
    format!("GET /private HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {token}\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_wrong_passwords_cost_little_cpu_and_lock_no_one_else_out() {
    let origin = Origin::start().await;
    // Cost 6: about 13 ms a verification in a debug build, so 1,000 of them would be
    // seconds of CPU.
    let alice = bcrypt::hash("wonderland", 6).expect("hash");
    let bob = bcrypt::hash("builder", 6).expect("hash");
    let routes = format!(
        "[policy.login]\nkind = \"basic_auth\"\nusers = {{ alice = \"{alice}\", bob = \"{bob}\" }}\n\n\
         [[route]]\nlistener = \"web\"\nname = \"private\"\nmatch = {{ path_prefix = \"/private\" }}\npool = \"site\"\npolicies = [\"login\"]\n"
    );
    for (path, lb) in both_paths("basic-budget", &http_site(origin.addr, "", &routes)).await {
        let web = lb.listener("web").await;
        // Alice signs in before the attack (her browser will keep sending the same).
        let ok = responses(web, basic("alice", "wonderland").as_bytes(), 1).await;
        assert_eq!(ok[0].0, 200, "{path}");
        let before = cpu_seconds(lb.pid());
        let mut refused = 0;
        for batch in 0..20 {
            let guesses: String = (0..50)
                .map(|i| basic("alice", &format!("guess-{batch}-{i}")))
                .collect();
            let answers = responses(web, guesses.as_bytes(), 50).await;
            refused += answers.iter().filter(|a| a.0 == 401).count();
        }
        let spent = cpu_seconds(lb.pid()) - before;
        eprintln!("{path}: {spent:.3} CPU-seconds for 1,000 guesses");
        assert_eq!(refused, 1000, "{path}: every guess refused");
        assert!(
            spent < 1.0,
            "{path}: 1,000 guesses cost lb {spent:.2} CPU-seconds"
        );
        // Alice (remembered) and Bob (first sign-in, same address) are served.
        let after = responses(
            web,
            format!(
                "{}{}",
                basic("alice", "wonderland"),
                basic("bob", "builder")
            )
            .as_bytes(),
            2,
        )
        .await;
        assert_eq!(
            after.iter().map(|a| a.0).collect::<Vec<_>>(),
            [200, 200],
            "{path}"
        );
        // Past the budget, guesses are counted under their own reason.
        let over = lb
            .metric_reaching(
                "lb_auth_failures_total",
                &[("policy", "login"), ("reason", "over_budget")],
                995.0,
            )
            .await;
        assert_eq!(
            over, 995.0,
            "{path}: 5 guesses verified, the rest answered at once"
        );
    }
}

/// `lb check` of a listener with an `/admin` route to pool "site" behind `guard`, and an
/// `/api` route (its own lines in `api`), under a config of the given policies.
fn check_routes(api: &str) -> (i32, String) {
    let login = bcrypt::hash("pw", 4).expect("hash");
    let text = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\n\
         [[pool]]\nname = \"site\"\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n\n\
         [[pool]]\nname = \"other\"\nbackends = [{{ addr = \"127.0.0.1:2\" }}]\n\n\
         [[pool]]\nname = \"twin\"\nbackends = [{{ addr = \"127.0.0.1:2\" }}, {{ addr = \"127.0.0.1:1\" }}]\n\n\
         [policy.staff]\nkind = \"basic_auth\"\nusers = {{ admin = \"{login}\" }}\n\n\
         [policy.office]\nkind = \"ip_filter\"\nallow = [\"10.0.0.0/8\"]\n\n\
         [policy.keys]\nkind = \"api_key\"\nkeys = [{{ name = \"cli\", sha256 = \"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\" }}]\n\n\
         [[route]]\nlistener = \"web\"\nname = \"admin\"\nmatch = {{ path_prefix = \"/admin\" }}\npool = \"site\"\npolicies = [\"staff\", \"office\", \"keys\"]\n\n\
         [[route]]\nlistener = \"web\"\nname = \"api\"\n{api}\n"
    );
    let path = write_config("reach", &text);
    let (code, out, err) = run_lb(&["check", "--config", path.to_str().expect("utf-8")]);
    assert!(
        out.contains(": OK (sha256:"),
        "warnings do not fail check: {out}\n{err}"
    );
    (code, err)
}

#[test]
fn check_compares_a_rewrite_with_where_the_guarding_route_forwards() {
    // The admin route forwards /admin/x as /internal/admin/x: that is what its token
    // guards on the backend, and /api/admin/x rewritten to /internal/admin/x reaches it.
    let text = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\n\
         [[pool]]\nname = \"site\"\nbackends = [{ addr = \"127.0.0.1:1\" }]\n\n\
         [policy.office]\nkind = \"ip_filter\"\nallow = [\"10.0.0.0/8\"]\n\n\
         [[route]]\nlistener = \"web\"\nname = \"admin\"\nmatch = { path_prefix = \"/admin\" }\npool = \"site\"\nrewrite = \"/internal/admin\"\npolicies = [\"office\"]\n\n\
         [[route]]\nlistener = \"web\"\nname = \"api\"\nmatch = { path_prefix = \"/api\" }\npool = \"site\"\nrewrite = \"/internal\"\n";
    let path = write_config("reach-forwarded", text);
    let (code, out, err) = run_lb(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("warning: route \"api\" forwards rewritten paths"),
        "{err}"
    );
}

#[test]
fn check_warns_when_a_rewrite_can_land_on_a_path_another_route_guards_more() {
    let warned = [
        // strip_prefix: /api/admin/x reaches /admin/x.
        "match = { path_prefix = \"/api\" }\npool = \"site\"\nstrip_prefix = true\npolicies = [\"keys\"]",
        "match = { path_prefix = \"/api\" }\npool = \"site\"\nrewrite = \"/\"\npolicies = [\"keys\"]",
        "match = { path_prefix = \"/api\" }\npool = \"site\"\nrewrite = \"/admin/public\"\npolicies = [\"keys\"]",
        "match = { path_prefix = \"/api\" }\npool = \"site\"\nrewrite = \"/ADMIN\"\npolicies = [\"keys\"]",
        "match = { path = \"/api/me\" }\npool = \"site\"\nrewrite = \"/admin/me\"\npolicies = [\"keys\"]",
        "match = { path_regex = \"^/v1/(.*)$\" }\npool = \"site\"\nrewrite = \"/$1\"\npolicies = [\"keys\"]",
        "match = { path_regex = \"^/v1/(.*)$\" }\npool = \"site\"\nrewrite = \"/adm$1\"\npolicies = [\"keys\"]",
        // Another pool, but the same backend behind it.
        "match = { path_prefix = \"/api\" }\npool = \"twin\"\nstrip_prefix = true\npolicies = [\"keys\"]",
    ];
    for api in warned {
        let (code, err) = check_routes(api);
        assert_eq!(code, 0, "{api}: {err}");
        assert!(
            err.contains("warning: route \"api\" forwards rewritten paths that can reach path_prefix = \"/admin\" on pool backends that route \"admin\" guards with \"staff\", \"office\", which route \"api\" does not apply"),
            "{api}:\n{err}"
        );
        assert!(err.contains("= key: route[1]."), "{api}:\n{err}");
    }
    let quiet = [
        // The same policies, another pool, a rewrite that stays elsewhere, no rewrite.
        "match = { path_prefix = \"/api\" }\npool = \"site\"\nstrip_prefix = true\npolicies = [\"staff\", \"office\", \"keys\"]",
        "match = { path_prefix = \"/api\" }\npool = \"other\"\nstrip_prefix = true\npolicies = [\"keys\"]",
        "match = { path_prefix = \"/api\" }\npool = \"site\"\nrewrite = \"/public\"\npolicies = [\"keys\"]",
        "match = { path_prefix = \"/api\" }\npool = \"site\"\nrewrite = \"/administrator\"\npolicies = [\"keys\"]",
        "match = { path_prefix = \"/api\" }\npool = \"site\"\npolicies = [\"keys\"]",
    ];
    for api in quiet {
        let (code, err) = check_routes(api);
        assert_eq!(code, 0, "{api}: {err}");
        assert!(!err.contains("forwards rewritten paths"), "{api}:\n{err}");
    }
    // The warning points at the line that rewrites.
    let (_, err) = check_routes(warned[0]);
    assert!(
        err.contains("strip_prefix = true\n   |                ^^^^"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_in_the_query_never_reaches_the_backend() {
    let origin = Origin::start().await;
    // sha256("password").
    let routes = "[policy.keys]\nkind = \"api_key\"\nquery = \"api_key\"\n\
         keys = [{ name = \"cli\", sha256 = \"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\" }]\n\n\
         [[route]]\nlistener = \"web\"\nname = \"private\"\nmatch = { path_prefix = \"/private\" }\npool = \"site\"\npolicies = [\"keys\"]\n";
    // (target, extra fields, status, what the origin must get)
    let cases: [(&str, &str, u16, Option<&str>); 10] = [
        (
            "/private?api_key=password&x=1",
            "",
            200,
            Some("/private?x=1"),
        ),
        (
            "/private?x=1&api_key=password",
            "",
            200,
            Some("/private?x=1"),
        ),
        ("/private?api_key=password", "", 200, Some("/private")),
        (
            "/private?API_KEY=password&b=%41",
            "",
            200,
            Some("/private?b=%41"),
        ),
        ("/private?api%5Fkey=password", "", 200, Some("/private")),
        (
            "/private?api_key=password&api_key=password",
            "",
            200,
            Some("/private"),
        ),
        // The header presents the key; the query's copy (anyone's) is still taken out.
        (
            "/private?api_key=letmein&y=2",
            "X-API-Key: password\r\n",
            200,
            Some("/private?y=2"),
        ),
        // Two different keys: which one counts would be a guess.
        ("/private?api_key=password&api_key=secret", "", 401, None),
        ("/private?api_key=secret&API_KEY=password", "", 401, None),
        // A copy behind `;`, which some backends split pairs on, cannot be taken out.
        (
            "/private?x=1;api_key=letmein",
            "X-API-Key: password\r\n",
            401,
            None,
        ),
    ];
    for (path, lb) in both_paths("api-key-query", &http_site(origin.addr, "", routes)).await {
        let web = lb.listener("web").await;
        for (target, extra, status, forwarded) in cases {
            let from = origin.count();
            let request =
                format!("GET {target} HTTP/1.1\r\nHost: h\r\n{extra}Connection: close\r\n\r\n");
            let answers = responses(web, request.as_bytes(), 1).await;
            assert_eq!(
                answers.first().map(|a| a.0),
                Some(status),
                "{path} {target}"
            );
            let got: Vec<String> = origin
                .since(from)
                .iter()
                .map(|r| r.target().to_string())
                .collect();
            assert_eq!(
                got,
                forwarded
                    .map(str::to_string)
                    .into_iter()
                    .collect::<Vec<_>>(),
                "{path} {target}"
            );
        }
    }
    let leaked = origin.received().iter().any(|r| {
        let head = r.head.to_ascii_lowercase();
        head.contains("password") || head.contains("letmein") || head.contains("api_key")
    });
    assert!(!leaked, "a key reached the origin: {:?}", origin.received());
}
