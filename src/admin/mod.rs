//! The admin databases: `pgcat` answers with PgCat's commands and columns, `pgbouncer` with
//! PgBouncer's, so PgCat dashboards and PgBouncer scripts/exporters both keep working.
//! Simple query protocol only; only `admin_username` gets in (login is in `frontend`).

mod commands;
pub mod http;
pub mod prometheus;
pub mod report;
mod show;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use crate::app::App;
use crate::wire::frame;
use crate::wire::messages::{self, PgError};

/// Which console a client opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    PgCat,
    PgBouncer,
}

pub fn is_admin_database(database: &str) -> bool {
    matches!(database, "pgcat" | "pgbouncer")
}

/// ParameterStatus for an admin login.
pub fn greet(out: &mut BytesMut, database: &str) {
    for (name, value) in [
        ("server_version", "15.0 (pgcat)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", database),
    ] {
        messages::parameter_status(out, name, value);
    }
}

/// Serves an admin session until the client leaves.
pub async fn serve(
    stream: &mut crate::net::Stream,
    app: &App,
    (database, info): (&str, &crate::stats::ClientInfo),
    pending: BytesMut,
) -> std::io::Result<()> {
    let flavor = if database == "pgbouncer" {
        Flavor::PgBouncer
    } else {
        Flavor::PgCat
    };
    let mut buf = pending;
    buf.reserve(1024);
    let mut out = BytesMut::new();
    loop {
        let message = match frame::whole(&buf, 1 << 20) {
            Ok(Some((tag, body, total))) => {
                let m = (tag, body.to_vec());
                buf.advance(total);
                Some(m)
            }
            Ok(None) => None,
            Err(e) => {
                PgError::fatal("08P01", e.to_string()).encode(&mut out);
                return stream.send(&out).await;
            }
        };
        let Some((tag, body)) = message else {
            // An online upgrade closes the console at its idle point (it cannot move).
            let upgrading = std::future::poll_fn(|cx| {
                info.interrupt.poll(cx, crate::stats::Interrupt::HANDOVER)
            });
            tokio::select! {
                read = stream.read_buf(&mut buf) => if read? == 0 {
                    return Ok(());
                },
                _ = upgrading => {
                    PgError::upgrading().encode(&mut out);
                    return stream.send(&out).await;
                }
            }
            continue;
        };
        match tag {
            b'Q' => {
                let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
                let sql = String::from_utf8_lossy(&body[..end]).into_owned();
                commands::run_all(app, flavor, &sql, &mut out).await;
                messages::ready_for_query(&mut out, b'I');
            }
            b'X' => return Ok(()),
            b'S' => messages::ready_for_query(&mut out, b'I'),
            b'P' => PgError::error(
                "0A000",
                "the admin console speaks the simple query protocol only",
            )
            .with_hint("Use psql, or simple_query in your driver.")
            .encode(&mut out),
            _ => {}
        }
        stream.send(&out).await?;
        out.clear();
    }
}
