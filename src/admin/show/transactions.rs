//! `SHOW TRANSACTIONS`: the two-phase transactions of this instance that are prepared on
//! some shard right now (in-doubt ones, and those a session is committing), listed by a
//! resolver pass that ends nothing; empty when no pool commits in two phases.

use bytes::BytesMut;

use super::{n, result};
use crate::app::App;

pub async fn transactions(app: &App, out: &mut BytesMut) {
    let found = match app.two_phase() {
        Some(coordinator) => {
            let pools = app.pools();
            crate::twophase::resolve(&coordinator, &pools.all(), false)
                .await
                .found
        }
        None => Vec::new(),
    };
    let rows = found
        .into_iter()
        .map(|t| {
            vec![
                t.pool,
                t.user,
                n(t.shard),
                t.gid,
                n(t.age),
                t.state.to_string(),
            ]
        })
        .collect();
    result(
        out,
        &[
            ("database", false),
            ("user", false),
            ("shard", true),
            ("gid", false),
            ("age", true),
            ("state", false),
        ],
        rows,
    );
}
