//! PgCat's plugins at run time, for an idle client's Query or Parse: `query_logger` logs
//! it (pool, user, client); `table_access` refuses it (42501, naming the table) when it
//! touches a listed table anywhere (joins, subqueries, CTEs); `intercept` answers a
//! configured simple Query itself — columns and rows from the config, `${DATABASE}` and
//! `${USER}` substituted — without taking a server.

use super::*;
use crate::config::Intercept;

impl Client {
    /// Runs the pool's plugins on the statement `sql` of the client's Query (`simple`) or
    /// Parse, first in its buffer; `true` when the pooler answered the request.
    pub(super) async fn run_plugins(
        &mut self,
        sql: &str,
        simple: bool,
        status: u8,
    ) -> Result<bool, ClientError> {
        let pool = self.session.pool.clone();
        if pool.query_logger {
            let info = &self.session.info;
            tracing::info!(
                pool = %pool.pool_name,
                user = %pool.username,
                client = info.id,
                query = sql,
                "query"
            );
        }
        // The router's analysis (cached; parsed whatever its length) names the tables.
        let blocked = (!pool.blocked_tables.is_empty())
            .then(|| pool.router.analyze_session(sql))
            .and_then(|a| pgcat_parser::tables::touched(&a.tables, &pool.blocked_tables));
        if let Some(table) = blocked {
            let error = PgError::error("42501", format!("permission denied for table {table}"))
                .with_detail("The pool's table_access plugin blocks this table.");
            self.reject_in(error, false, status).await?;
            return Ok(true);
        }
        if pool.intercepts.is_empty() || !simple {
            return Ok(false);
        }
        let wanted = pgcat_parser::normalized(sql);
        let Some((_, intercept)) = pool.intercepts.iter().find(|(q, _)| *q == wanted) else {
            return Ok(false);
        };
        let (_, _, total) =
            crate::wire::frame::whole(&self.buf, REWRITE_CAP)?.ok_or(ClientError::Gone)?;
        self.buf.advance(total);
        let mut out = BytesMut::new();
        answer(&mut out, intercept, &pool.pool_name, &pool.username);
        messages::ready_for_query(&mut out, status);
        self.stream.send(&out).await?;
        Ok(true)
    }
}

/// The RowDescription, DataRows and CommandComplete of an intercepted query.
fn answer(out: &mut BytesMut, intercept: &Intercept, database: &str, user: &str) {
    messages::message(out, b'T', |m| {
        m.extend_from_slice(&(intercept.columns.len() as u16).to_be_bytes());
        for (name, ty) in &intercept.columns {
            let (oid, len): (u32, i16) = match ty.as_str() {
                "int2" => (21, 2),
                "int4" => (23, 4),
                "int8" => (20, 8),
                "bool" => (16, 1),
                "varchar" => (1043, -1),
                _ => (25, -1),
            };
            m.extend_from_slice(name.as_bytes());
            m.extend_from_slice(&[0]);
            m.extend_from_slice(&0u32.to_be_bytes()); // no table
            m.extend_from_slice(&0i16.to_be_bytes()); // no column number
            m.extend_from_slice(&oid.to_be_bytes());
            m.extend_from_slice(&len.to_be_bytes());
            m.extend_from_slice(&(-1i32).to_be_bytes()); // no type modifier
            m.extend_from_slice(&0i16.to_be_bytes()); // text format
        }
    });
    for row in &intercept.rows {
        messages::message(out, b'D', |m| {
            m.extend_from_slice(&(row.len() as u16).to_be_bytes());
            for value in row {
                let value = value
                    .replace("${DATABASE}", database)
                    .replace("${USER}", user);
                m.extend_from_slice(&(value.len() as i32).to_be_bytes());
                m.extend_from_slice(value.as_bytes());
            }
        });
    }
    messages::command_complete(out, &format!("SELECT {}", intercept.rows.len()));
}
