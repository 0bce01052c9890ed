//! Admin commands: parsing and the ones that act (RELOAD, PAUSE, RESUME, SHUTDOWN,
//! RECONNECT, KILL, SET). SHOW lives in `show`.

use std::time::Duration;

use bytes::BytesMut;

use super::{show, Flavor};
use crate::app::App;
use crate::stats::Interrupt;
use crate::wire::messages::{self, PgError};

/// Runs a query string of one or more admin statements separated by `;` (`SHOW POOLS;
/// SHOW LISTS`), appending each one's replies (not ReadyForQuery) to `out`; an error stops
/// the rest, as in PostgreSQL. An empty string gets EmptyQueryResponse.
pub async fn run_all(app: &App, flavor: Flavor, sql: &str, out: &mut BytesMut) {
    let statements: Vec<&str> = sql
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if statements.is_empty() {
        out.extend_from_slice(&[b'I', 0, 0, 0, 4]);
        return;
    }
    for statement in statements {
        if !run(app, flavor, statement, out).await {
            return;
        }
    }
}

/// Runs one admin statement, appending its replies to `out`; `false` when it failed.
async fn run(app: &App, flavor: Flavor, sql: &str, out: &mut BytesMut) -> bool {
    let text = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some(first) = words.first() else {
        out.extend_from_slice(&[b'I', 0, 0, 0, 4]);
        return true;
    };
    let arg = words.get(1..).map(|w| w.join(" ")).unwrap_or_default();
    let result = match first.to_ascii_uppercase().as_str() {
        "SHOW" if arg.eq_ignore_ascii_case("transactions") => {
            show::transactions(app, out).await;
            Ok("SHOW".to_string())
        }
        "SHOW" => show::run(app, flavor, &arg, out),
        "SET" => Ok("SET".to_string()),
        "RELOAD" => reload(app, out),
        "PAUSE" => pause(app, &arg, true).await,
        "RESUME" => {
            app.suspended
                .store(false, std::sync::atomic::Ordering::Relaxed);
            pause(app, &arg, false).await
        }
        "SHUTDOWN" => {
            app.begin_shutdown();
            Ok("SHUTDOWN".to_string())
        }
        "RECONNECT" => reconnect(app, &arg, "RECONNECT"),
        "KILL" => {
            if arg.trim().is_empty() {
                Err(PgError::error("42601", "KILL needs a database").with_hint("KILL mydb"))
            } else {
                targets(app, &arg)
                    .map(|pools| {
                        app.registry
                            .interrupt(Interrupt::KILLED, |c| pools.iter().any(|p| p.serves(c)))
                    })
                    .and_then(|()| reconnect(app, &arg, "KILL"))
            }
        }
        "SUSPEND" => {
            app.suspended
                .store(true, std::sync::atomic::Ordering::Relaxed);
            pause(app, "", true).await.map(|_| "SUSPEND".to_string())
        }
        "WAIT_CLOSE" => wait_close(app, &arg).await,
        "ENABLE" | "DISABLE" => enable(app, &arg, first.eq_ignore_ascii_case("DISABLE")),
        "KILL_CLIENT" => kill_client(app, &arg),
        "BAN" => ban(app, &words[1..]),
        "UNBAN" => unban(app, &words[1..]),
        _ => Err(unknown(text)),
    };
    match result {
        Ok(tag) => {
            messages::command_complete(out, &tag);
            true
        }
        Err(e) => {
            e.encode(out);
            false
        }
    }
}

fn unknown(text: &str) -> PgError {
    PgError::error("42601", format!("unsupported admin command: {text}"))
        .with_hint("SHOW HELP lists the commands.")
}

fn reload(app: &App, out: &mut BytesMut) -> Result<String, PgError> {
    match app.reload() {
        Ok(notes) => {
            for note in notes {
                messages::notice(out, &note);
            }
            Ok("RELOAD".to_string())
        }
        Err(reason) => {
            tracing::error!("RELOAD refused, keeping the running configuration: {reason}");
            Err(PgError::error(
                "F0000",
                format!("RELOAD refused, the running configuration is kept: {reason}"),
            ))
        }
    }
}

/// The pool users a PAUSE/RESUME/RECONNECT target names: all, `db`, or PgCat's `db,user`.
fn targets(app: &App, arg: &str) -> Result<Vec<std::sync::Arc<crate::pool::UserPool>>, PgError> {
    let pools = app.pools();
    let all = pools.all();
    let arg = arg.trim();
    if arg.is_empty() {
        return Ok(all.into_iter().cloned().collect());
    }
    let (db, user) = match arg.split_once(',') {
        Some((d, u)) => (d.trim(), Some(u.trim())),
        None => (arg, None),
    };
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|p| &*p.pool_name == db && user.is_none_or(|u| &*p.username == u))
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(PgError::error("3D000", format!("no such pool: {arg}"))
            .with_hint("SHOW POOLS lists them."));
    }
    Ok(chosen)
}

/// PAUSE waits for transactions in progress to end (new ones queue); RESUME releases them.
async fn pause(app: &App, arg: &str, paused: bool) -> Result<String, PgError> {
    let pools = targets(app, arg)?;
    for p in &pools {
        p.set_paused(paused);
    }
    if paused {
        while pools.iter().any(|p| p.active() > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok("PAUSE".to_string())
    } else {
        Ok("RESUME".to_string())
    }
}

fn health_of(
    app: &App,
    addr: Option<&&str>,
) -> Result<std::sync::Arc<crate::stats::health::Health>, PgError> {
    let addr = addr.ok_or_else(|| {
        PgError::error("42601", "give the server as host:port").with_hint("BAN 10.0.0.5:5432 60")
    })?;
    app.healths.find(addr).ok_or_else(|| {
        PgError::error("22023", format!("no server {addr} in any pool"))
            .with_hint("SHOW DATABASES lists host and port.")
    })
}

/// `BAN host:port seconds`: keeps the server out of rotation (queries on it fail now).
fn ban(app: &App, args: &[&str]) -> Result<String, PgError> {
    let health = health_of(app, args.first())?;
    let secs: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            PgError::error("22023", "BAN needs a number of seconds > 0")
                .with_hint("BAN 10.0.0.5:5432 60")
        })?;
    health.ban(secs, "banned by the administrator", true, false);
    Ok("BAN".to_string())
}

/// `UNBAN host:port`.
fn unban(app: &App, args: &[&str]) -> Result<String, PgError> {
    health_of(app, args.first())?.unban();
    Ok("UNBAN".to_string())
}

/// Replaces the server connections of the targets: idle ones are closed now, busy ones
/// when they are given back (WAIT_CLOSE waits for those); the pools open fresh ones.
fn reconnect(app: &App, arg: &str, tag: &str) -> Result<String, PgError> {
    for p in targets(app, arg)? {
        for a in p.shards.iter().flatten() {
            a.replace_connections();
        }
    }
    Ok(tag.to_string())
}

/// `WAIT_CLOSE [db]`: returns once the connections a RECONNECT (or KILL) replaced are
/// closed.
async fn wait_close(app: &App, arg: &str) -> Result<String, PgError> {
    let pools = targets(app, arg)?;
    loop {
        let mut waiting = false;
        for a in pools.iter().flat_map(|p| p.shards.iter().flatten()) {
            let Some(cutoff) = a.replaced_at() else {
                continue;
            };
            a.close_replaced_idle();
            let db = &a.database;
            waiting |= (app.registry.servers().iter()).any(|s| {
                &s.database == db && s.addr == format!("{}:{}", a.host, a.port) && s.since <= cutoff
            });
        }
        if !waiting {
            return Ok("WAIT_CLOSE".to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `ENABLE db` / `DISABLE db`: new clients of the database are let in, or refused.
fn enable(app: &App, arg: &str, disable: bool) -> Result<String, PgError> {
    let db = arg.trim();
    if db.is_empty() || !app.pools().all().iter().any(|p| &*p.pool_name == db) {
        return Err(PgError::error("3D000", format!("no such database: {db}"))
            .with_hint("SHOW DATABASES lists them."));
    }
    app.set_disabled(db, disable);
    Ok(if disable { "DISABLE" } else { "ENABLE" }.to_string())
}

/// `KILL_CLIENT id`: closes one client (the id as SHOW CLIENTS shows it: `ptr` on the
/// `pgbouncer` console, `client_id` on `pgcat`).
fn kill_client(app: &App, arg: &str) -> Result<String, PgError> {
    let text = arg.trim();
    let hex = text.trim_start_matches("0x").trim_start_matches("0X");
    let id = u64::from_str_radix(hex, 16)
        .ok()
        .filter(|_| !hex.is_empty());
    let found = id.is_some_and(|id| {
        let found = std::cell::Cell::new(false);
        app.registry.interrupt(Interrupt::KILLED, |c| {
            let hit = c.id == id && !crate::admin::is_admin_database(&c.database);
            found.set(found.get() | hit);
            hit
        });
        found.get()
    });
    if !found {
        return Err(PgError::error("08003", format!("no such client: {text}"))
            .with_hint("SHOW CLIENTS lists them (ptr on pgbouncer, client_id on pgcat)."));
    }
    Ok("KILL_CLIENT".to_string())
}
