//! `pgcat --check`: PgCat's own configs pass, a broken config fails naming the key and the
//! reason, an unknown key passes with a warning naming it. Never connects anywhere.

mod support;

use std::process::{Command, Output};

fn check(path: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgcat"))
        .arg("--check")
        .arg(path)
        .env_remove("RUST_LOG")
        .env_remove("CONFIG_FILE")
        .output()
        .expect("run pgcat --check")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check_text(name: &str, toml: &str) -> Output {
    // One directory per test (the file name is part of the message the tests look at).
    let dir = std::env::temp_dir().join(format!("pgcat-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, toml).expect("write config");
    let out = check(&path);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// A small valid config with the given `pool_size` value and extra `[general]` lines.
fn base(pool_size: &str, general_extra: &str) -> String {
    format!(
        "[general]\nhost = \"127.0.0.1\"\nport = 6432\nadmin_username = \"admin\"\nadmin_password = \"admin\"\n{general_extra}\n\
         [pools.app.users.0]\nusername = \"u\"\npassword = \"p\"\npool_size = {pool_size}\n\
         [pools.app.shards.0]\ndatabase = \"app\"\nservers = [[\"127.0.0.1\", 5432, \"primary\"]]\n"
    )
}

#[test]
fn pgcat_upstream_example_config_passes_check() {
    let out = check(&support::repo_path("fixtures/pgcat-upstream/pgcat.toml"));
    assert!(out.status.success(), "exit {}: {}", out.status, text(&out));
}

#[test]
fn pgcat_upstream_minimal_config_passes_check() {
    let out = check(&support::repo_path(
        "fixtures/pgcat-upstream/pgcat.minimal.toml",
    ));
    assert!(out.status.success(), "exit {}: {}", out.status, text(&out));
}

#[test]
fn documented_example_config_passes_check() {
    let out = check(&support::repo_path("pgcat.toml"));
    assert!(out.status.success(), "exit {}: {}", out.status, text(&out));
}

#[test]
fn config_with_wrong_value_type_fails_check_naming_key_and_reason() {
    let out = check_text("bad-type.toml", &base("\"ten\"", ""));
    assert!(
        !out.status.success(),
        "a string pool_size must be rejected: {}",
        text(&out)
    );
    let msg = text(&out);
    assert!(
        msg.contains("pools.app.users.0.pool_size"),
        "names the key: {msg}"
    );
    assert!(msg.contains("\"ten\""), "names the bad value: {msg}");
}

#[test]
fn config_with_invalid_server_role_fails_check_naming_key_and_reason() {
    let toml = base("5", "").replace("\"primary\"]]", "\"master\"]]");
    let out = check_text("bad-role.toml", &toml);
    assert!(
        !out.status.success(),
        "role 'master' must be rejected: {}",
        text(&out)
    );
    let msg = text(&out);
    assert!(
        msg.contains("pools.app.shards.0.servers"),
        "names the key: {msg}"
    );
    assert!(
        msg.contains("master") && msg.contains("primary"),
        "says what is wrong and what is valid: {msg}"
    );
}

#[test]
fn config_that_is_not_toml_fails_check() {
    let out = check_text("not-toml.toml", "[general\nport = ");
    assert!(
        !out.status.success(),
        "broken TOML must be rejected: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("not-toml.toml"),
        "names the file: {}",
        text(&out)
    );
}

#[test]
fn config_with_unknown_key_passes_check_with_a_warning_naming_it() {
    let out = check_text(
        "unknown-key.toml",
        &base("5", "colour_of_the_cat = \"blue\""),
    );
    assert!(
        out.status.success(),
        "an unknown key is not fatal: {}",
        text(&out)
    );
    let msg = text(&out);
    assert!(
        msg.contains("general.colour_of_the_cat"),
        "the warning names the key: {msg}"
    );
    assert!(
        msg.contains("WARN") || msg.to_lowercase().contains("warn"),
        "it is a warning: {msg}"
    );
}

#[test]
fn missing_config_file_fails_check() {
    let out = check(std::path::Path::new("/nonexistent/pgcat.toml"));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("/nonexistent/pgcat.toml"),
        "names the file: {}",
        text(&out)
    );
}
