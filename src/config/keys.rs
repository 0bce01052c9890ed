//! Which keys pgcat.toml may contain, and the warnings about the ones it does contain:
//! unknown keys (PgCat ignored them silently, which hid typos) and known keys this pooler does
//! not implement yet (`NOT_IMPLEMENTED`). Works on the parsed `toml::Table`, never fails.

use std::fmt::Write as _;

/// Known keys whose setting is read but has no effect yet; each one present in a file gets a
/// warning. Remove an entry when the feature lands. `*` matches any one path segment
/// (a pool name, a user or shard index).
/// Empty since issue 21: every PgCat key works.
pub const NOT_IMPLEMENTED: &[&str] = &[];

/// The shape of a pgcat.toml.
enum Node {
    /// A table accepted as any TOML (a plugin's settings, mirrors).
    Loose,
    /// A table with fixed keys: plain values, then sub-tables.
    Table(&'static [&'static str], &'static [(&'static str, Node)]),
    /// A table whose keys are names or indexes, each holding the same shape.
    Map(&'static Node),
}

const USER: Node = Node::Table(
    &[
        "username",
        "password",
        "auth_type",
        "server_username",
        "server_password",
        "pool_size",
        "min_pool_size",
        "pool_mode",
        "server_lifetime",
        "connect_timeout",
        "idle_timeout",
        "statement_timeout",
    ],
    &[],
);

/// `[plugins]`, `[pools.<name>.plugins]`: PgCat's four plugins (their settings are
/// checked when built, `config::plugins`).
const PLUGINS: Node = Node::Table(
    &[],
    &[
        ("intercept", Node::Loose),
        ("query_logger", Node::Loose),
        ("table_access", Node::Loose),
        ("prewarmer", Node::Loose),
    ],
);

const SHARD: Node = Node::Table(&["database", "servers", "mirrors"], &[]);

const POOL_LEAVES: &[&str] = &[
    "pool_mode",
    "load_balancing_mode",
    "default_role",
    "query_parser_enabled",
    "query_parser_max_length",
    "max_replica_lag_bytes",
    "read_your_writes",
    "pin_session_state",
    "query_parser_read_write_splitting",
    "primary_reads_enabled",
    "connect_timeout",
    "idle_timeout",
    "server_lifetime",
    "checkout_failure_limit",
    "sharding_function",
    "automatic_sharding_key",
    "sharding_key_regex",
    "shard_id_regex",
    "regex_search_limit",
    "default_shard",
    "auth_query",
    "auth_query_user",
    "auth_query_password",
    "cleanup_server_connections",
    "log_client_parameter_status_changes",
    "prepared_statements_cache_size",
    "max_prepared_statements",
    "db_activity_based_routing",
    "db_activity_init_delay",
    "db_activity_based_ms_init_delay",
    "db_activity_ttl",
    "table_mutation_cache_ms_ttl",
    "two_phase_commit",
];

const POOL: Node = Node::Table(
    POOL_LEAVES,
    &[
        ("plugins", PLUGINS),
        ("shards", Node::Map(&SHARD)),
        ("users", Node::Map(&USER)),
    ],
);

const GENERAL_LEAVES: &[&str] = &[
    "host",
    "port",
    "enable_prometheus_exporter",
    "prometheus_exporter_port",
    "connect_timeout",
    "idle_timeout",
    "server_lifetime",
    "idle_client_in_transaction_timeout",
    "healthcheck_timeout",
    "healthcheck_delay",
    "healthcheck_interval",
    "max_client_conn",
    "client_login_timeout",
    "replica_lag_check_interval",
    "shutdown_timeout",
    "ban_time",
    "server_round_robin",
    "worker_threads",
    "autoreload",
    "tcp_keepalives_idle",
    "tcp_keepalives_count",
    "tcp_keepalives_interval",
    "tcp_user_timeout",
    "log_client_connections",
    "log_client_disconnections",
    "dns_cache_enabled",
    "dns_max_ttl",
    "tls_certificate",
    "tls_private_key",
    "server_tls",
    "verify_server_certificate",
    "tls_client_required",
    "server_tls_ca_file",
    "unix_socket_dir",
    "admin_username",
    "admin_password",
    "admin_auth_type",
    "validate_config",
    "auth_query",
    "auth_query_user",
    "auth_query_password",
    "instance_name",
    "two_phase_commit_log",
    "pidfile",
    "so_reuseport",
    "peer_id",
];

/// `[peers.<id>]`.
const PEER: Node = Node::Table(&["host", "port"], &[]);

const GENERAL: Node = Node::Table(GENERAL_LEAVES, &[]);

const ROOT: Node = Node::Table(
    &[],
    &[
        ("general", GENERAL),
        ("pools", Node::Map(&POOL)),
        ("plugins", PLUGINS),
        ("peers", Node::Map(&PEER)),
    ],
);

/// Warnings for every unknown key and every present-but-not-implemented key, in key order.
pub(crate) fn key_warnings(doc: &toml::Table) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut path = Vec::new();
    walk_table(&ROOT, doc, &mut path, &mut warnings);
    warnings
}

fn walk(node: &Node, value: &toml::Value, path: &mut Vec<String>, out: &mut Vec<String>) {
    // A value of the wrong type is serde's to report.
    let Some(table) = value.as_table() else {
        return;
    };
    walk_table(node, table, path, out);
}

fn walk_table(node: &Node, table: &toml::Table, path: &mut Vec<String>, out: &mut Vec<String>) {
    match node {
        Node::Loose => {}
        Node::Map(child) => {
            for (key, value) in table {
                path.push(key.clone());
                walk(child, value, path, out);
                path.pop();
            }
        }
        Node::Table(leaves, tables) => {
            for (key, value) in table {
                path.push(key.clone());
                if leaves.contains(&key.as_str()) {
                    not_implemented(path, out);
                } else if let Some((_, child)) = tables.iter().find(|(k, _)| k == key) {
                    not_implemented(path, out);
                    walk(child, value, path, out);
                } else {
                    unknown(path, value, out);
                }
                path.pop();
            }
        }
    }
}

fn not_implemented(path: &[String], out: &mut Vec<String>) {
    if NOT_IMPLEMENTED.iter().any(|p| matches(p, path)) {
        out.push(format!(
            "'{}' is not implemented yet and is ignored",
            display_path(path)
        ));
    }
}

/// Names an unknown key. A chain of one-key tables (`[pool.sharded_db.plugins]`, a typo for
/// `pools`) is followed to its end so the warning shows the header as the user wrote it.
fn unknown(path: &[String], value: &toml::Value, out: &mut Vec<String>) {
    let hint = misplaced_hint(path);
    let mut path = path.to_vec();
    let mut value = value;
    while let Some((key, inner)) = value
        .as_table()
        .filter(|t| t.len() == 1)
        .and_then(|t| t.iter().next())
    {
        path.push(key.clone());
        value = inner;
    }
    out.push(format!(
        "unknown key '{}' (ignored{hint})",
        display_path(&path)
    ));
}

/// A pool key written in `[general]` or the reverse (PgCat ignored both silently, e.g.
/// `prepared_statements_cache_size` in `[general]`, which left the cache off).
fn misplaced_hint(path: &[String]) -> &'static str {
    match path {
        [table, key] if table == "general" && POOL_LEAVES.contains(&key.as_str()) => {
            ": it is a pool setting, set it in [pools.<name>]"
        }
        [table, _, key] if table == "pools" && GENERAL_LEAVES.contains(&key.as_str()) => {
            ": it is a [general] setting"
        }
        _ => "",
    }
}

/// Does `pattern` (dotted, `*` = any one segment) name exactly this path?
fn matches(pattern: &str, path: &[String]) -> bool {
    let segments: Vec<&str> = pattern.split('.').collect();
    segments.len() == path.len()
        && segments
            .iter()
            .zip(path)
            .all(|(p, k)| *p == "*" || *p == k.as_str())
}

/// A dotted key path as TOML would write it: segments that are not bare keys are quoted.
pub(crate) fn display_path<S: AsRef<str>>(path: &[S]) -> String {
    let mut out = String::new();
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_segment(&mut out, segment.as_ref());
    }
    out
}

/// Appends one key, quoted unless it is a bare TOML key.
pub(crate) fn push_segment(out: &mut String, key: &str) {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        out.push_str(key);
    } else {
        let _ = write!(out, "{key:?}");
    }
}

/// `parent.key`, quoting `key` when needed.
pub(crate) fn join(parent: &str, key: &str) -> String {
    let mut out = String::with_capacity(parent.len() + key.len() + 1);
    out.push_str(parent);
    if !parent.is_empty() {
        out.push('.');
    }
    push_segment(&mut out, key);
    out
}
