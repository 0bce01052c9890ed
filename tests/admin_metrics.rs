//! Issue 5, "Must show" 4: `/metrics` parses as Prometheus text, uses PgCat's names and
//! labels, and its counters match SHOW STATS.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::admin::{admin, app_client, app_config, exec, pgcat_stats};
use support::{free_port, shared, with_general, Checks, Pooler, DB, SCRAM_PASS, SCRAM_USER};

/// GET over HTTP/1.0: (status, lower-cased headers, body).
fn http_get(port: u16, path: &str) -> Result<(u16, HashMap<String, String>, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, tail) = rest.split_once("\r\n").ok_or("bad chunk")?;
            let size = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
            if size == 0 {
                break;
            }
            out.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    Ok((status, headers, body))
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses Prometheus text exposition format strictly enough to catch what Prometheus rejects:
/// metric/label names, quoted label values, numeric values, HELP/TYPE before the samples of a
/// family, no duplicate HELP/TYPE. Returns the samples and the TYPE of each family.
fn parse_prometheus(text: &str) -> Result<(Vec<Sample>, HashMap<String, String>), String> {
    let mut samples = Vec::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    for (no, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", no + 1);
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().ok_or_else(at)?;
            if !valid_metric_name(name) || !helps.insert(name.to_owned()) {
                return Err(format!("bad or duplicate HELP, {}", at()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, ty) = (parts.next().ok_or_else(at)?, parts.next().ok_or_else(at)?);
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                return Err(format!("unknown type, {}", at()));
            }
            if types.insert(name.to_owned(), ty.to_owned()).is_some() {
                return Err(format!("duplicate TYPE, {}", at()));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("no value, {}", at()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(format!("bad metric name, {}", at()));
        }
        let mut labels = HashMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                r = r.trim_start_matches([' ', ',']);
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = r.find('=').ok_or_else(|| format!("bad label, {}", at()))?;
                let lname = r[..eq].trim();
                if !valid_metric_name(lname) || lname.contains(':') {
                    return Err(format!("bad label name {lname:?}, {}", at()));
                }
                let v = r[eq + 1..]
                    .strip_prefix('"')
                    .ok_or_else(|| format!("unquoted label value, {}", at()))?;
                let mut value = String::new();
                let mut chars = v.char_indices();
                let mut end = None;
                while let Some((i, ch)) = chars.next() {
                    match ch {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => break,
                        },
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                let end = end.ok_or_else(|| format!("unterminated label value, {}", at()))?;
                labels.insert(lname.to_owned(), value);
                r = &v[end + 1..];
            }
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| format!("no value, {}", at()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| format!("bad value, {}", at()))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp, {}", at()))?;
        }
        let family_typed = types.contains_key(name)
            || ["_bucket", "_sum", "_count", "_total", "_created"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|f| types.contains_key(f)));
        if !family_typed {
            return Err(format!("sample before its # TYPE line, {}", at()));
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok((samples, types))
}

fn metric_sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> (f64, usize) {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    (matching.iter().map(|s| s.value).sum(), matching.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_is_prometheus_text_with_pgcat_names_matching_show_stats() {
    let cluster = shared();
    let metrics_port = free_port();
    let toml = with_general(
        &app_config(cluster, free_port(), 2),
        &format!("enable_prometheus_exporter = true\nprometheus_exporter_port = {metrics_port}"),
    );
    let pooler = Pooler::start(&toml);
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "metrics").await;
    const N: i64 = 20;
    for i in 0..N {
        exec(&c, &format!("SELECT {i}")).await;
    }
    // Traffic stopped; give any aggregation a moment.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pgc = admin(pooler.port, "pgcat").await;

    let fetch = move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match http_get(metrics_port, "/metrics") {
                Ok(r) => return r,
                Err(e) if Instant::now() > deadline => {
                    panic!("GET /metrics on {metrics_port}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    };
    let before = pgcat_stats(&pgc, SCRAM_USER).await;
    let (status, headers, body) = tokio::task::spawn_blocking(fetch).await.expect("fetch");
    let after = pgcat_stats(&pgc, SCRAM_USER).await;
    assert_eq!(status, 200, "GET /metrics: {headers:?}\n{body}");
    let ctype = headers.get("content-type").cloned().unwrap_or_default();
    assert!(ctype.starts_with("text/plain"), "content-type {ctype:?}");
    let (samples, types) =
        parse_prometheus(&body).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"));
    assert!(body.contains("# HELP "), "no # HELP lines:\n{body}");

    let user_labels = [("pool", DB), ("username", SCRAM_USER)];
    for name in [
        "pgcat_stats_total_query_count",
        "pgcat_stats_total_xact_count",
        "pgcat_stats_total_received",
        "pgcat_stats_total_sent",
        "pgcat_stats_total_wait_time",
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some("counter"),
            "{name} must be a counter:\n{body}"
        );
        let (_, n) = metric_sum(&samples, name, &user_labels);
        assert!(
            n >= 1,
            "no {name} sample for pool=app, username=scram_user:\n{body}"
        );
    }
    let s = samples
        .iter()
        .find(|s| s.name == "pgcat_stats_total_query_count")
        .expect("sample");
    for label in [
        "host", "shard", "role", "pool", "username", "database", "index",
    ] {
        assert!(
            s.labels.contains_key(label),
            "label {label} missing on {s:?}"
        );
    }
    let (primary_q, _) = metric_sum(
        &samples,
        "pgcat_stats_total_query_count",
        &[
            ("pool", DB),
            ("username", SCRAM_USER),
            ("role", "primary"),
            ("host", cluster.primary.host.as_str()),
        ],
    );
    assert!(
        primary_q >= N as f64,
        "primary's total_query_count {primary_q} < {N}\n{body}"
    );

    let (q, _) = metric_sum(&samples, "pgcat_stats_total_query_count", &user_labels);
    let (x, _) = metric_sum(&samples, "pgcat_stats_total_xact_count", &user_labels);
    assert!(
        before.query as f64 <= q && q <= after.query as f64,
        "metrics total_query_count {q} must match SHOW STATS ({} .. {})",
        before.query,
        after.query
    );
    assert!(
        before.xact as f64 <= x && x <= after.xact as f64,
        "metrics total_xact_count {x} must match SHOW STATS ({} .. {})",
        before.xact,
        after.xact
    );
    assert!(q >= N as f64, "{q} < {N}");

    // Pool, server and database families, PgCat's names and labels (one failure does not
    // hide the others; the body is printed once).
    let mut checks = Checks::new();
    checks.run("pgcat_databases_pool_size", || {
        let (size, n) = metric_sum(&samples, "pgcat_databases_pool_size", &user_labels);
        assert!(n >= 1, "no pgcat_databases_pool_size for app/scram_user");
        assert_eq!(size / n as f64, 2.0, "pool_size 2 per address");
    });
    for name in [
        "pgcat_pools_cl_idle",
        "pgcat_pools_cl_active",
        "pgcat_pools_cl_waiting",
        "pgcat_pools_sv_active",
        "pgcat_pools_sv_idle",
        "pgcat_pools_maxwait",
        "pgcat_pools_maxwait_us",
    ] {
        checks.run(name, || {
            let (_, n) = metric_sum(&samples, name, &[("pool", DB), ("user", SCRAM_USER)]);
            assert_eq!(n, 1, "one {name} sample with pool=app, user=scram_user");
        });
    }
    for name in ["pgcat_servers_is_banned", "pgcat_servers_is_paused"] {
        checks.run(name, || {
            let (v, n) = metric_sum(&samples, name, &user_labels);
            assert!(n >= 1, "no {name} sample for pool=app, username=scram_user");
            assert_eq!(v, 0.0, "{name}");
        });
    }
    if !checks.0.is_empty() {
        eprintln!("--- /metrics body ---\n{body}");
    }

    let (status, _, _) =
        tokio::task::spawn_blocking(move || http_get(metrics_port, "/nothing-here"))
            .await
            .expect("task")
            .expect("GET /nothing-here");
    assert_eq!(status, 404);
    checks.finish();
}
