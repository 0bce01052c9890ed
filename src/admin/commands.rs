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
        "RESUME" => pause(app, &arg, false).await,
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

/// Closes the idle server connections of the targets; the pools open fresh ones.
fn reconnect(app: &App, arg: &str, tag: &str) -> Result<String, PgError> {
    for p in targets(app, arg)? {
        for a in p.shards.iter().flatten() {
            a.pool.retain(|_, _| false);
        }
    }
    Ok(tag.to_string())
}
