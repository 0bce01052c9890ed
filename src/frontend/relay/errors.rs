//! Errors a client is told: a request refused without a server, a server lost mid
//! conversation (one error per event, the session's state honestly reported), and the
//! pooler's own FATALs.

use super::*;

/// What PostgreSQL answers any statement but the end of a failed transaction with.
pub(super) fn aborted_transaction() -> PgError {
    PgError::error(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

pub(super) fn killed_error_pg() -> PgError {
    PgError::fatal(
        "57P01",
        "terminating connection due to administrator command: KILL of its database",
    )
}

pub(super) fn killed_error() -> ClientError {
    killed_error_pg().into()
}

/// What an idle client is told when the pooler shuts down.
pub(super) fn shutdown_error() -> ClientError {
    PgError::fatal(
        "57P01",
        "terminating connection due to administrator command: the pooler is shutting down",
    )
    .into()
}

impl Client {
    /// Answers the client's current request with `error` instead of a server: a Query or
    /// FunctionCall gets the error and ReadyForQuery; an extended batch gets the error once
    /// (unless `reported`) and ReadyForQuery at its Sync, as PostgreSQL does after an error.
    pub(super) async fn reject(
        &mut self,
        error: PgError,
        reported: bool,
    ) -> Result<(), ClientError> {
        self.reject_in(error, reported, b'I').await
    }

    /// [`Client::reject`] for a client whose transaction status is `status` afterwards.
    pub(super) async fn reject_in(
        &mut self,
        error: PgError,
        mut reported: bool,
        status: u8,
    ) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        loop {
            let mut terminate = false;
            let n = self.scanner.scan(
                &self.buf,
                |_| false,
                |tag, _, _| match tag {
                    b'Q' | b'F' => {
                        error.encode(&mut out);
                        messages::ready_for_query(&mut out, status);
                    }
                    b'S' => {
                        if !reported {
                            error.encode(&mut out);
                        }
                        reported = false;
                        messages::ready_for_query(&mut out, status);
                    }
                    b'X' => terminate = true,
                    b'P' | b'B' | b'D' | b'E' | b'C' | b'H' if !reported => {
                        error.encode(&mut out);
                        reported = true;
                    }
                    _ => {}
                },
            )?;
            self.buf.advance(n);
            if !out.is_empty() {
                self.stream.send(&out).await?;
                out.clear();
            }
            if terminate {
                return Err(ClientError::Gone);
            }
            if self.buf.is_empty() && self.scanner.at_boundary() && !reported {
                return Ok(());
            }
            if read(&mut self.stream, &mut self.buf).await? == 0 {
                return Err(ClientError::Gone);
            }
        }
    }

    /// The server died under the client; the client hears of it once. Inside a
    /// transaction, or in session mode, the client's state is gone with it, so the client
    /// gets the server's FATAL as PostgreSQL sent it (or the pooler's 08006 where the
    /// server said nothing) and is closed, as PostgreSQL would close it. Between
    /// transactions in transaction mode each request in flight fails with that error at
    /// severity ERROR (one error and one ReadyForQuery each; none more for a request that
    /// already got its error) and the client's next transaction takes another server.
    pub(super) async fn server_lost(
        &mut self,
        e: BackendError,
        flow: &Flow,
        mode: PoolMode,
    ) -> Result<(), ClientError> {
        let ended = match &e {
            BackendError::Terminated { error, .. } => Some(error),
            _ => None,
        };
        if flow.status != b'I' || mode == PoolMode::Session {
            let Some(fatal) = ended else {
                let lost = format!("{e}; the session's transaction or state is lost");
                return Err(PgError::fatal("08006", lost).into());
            };
            let mut out = BytesMut::new();
            fatal.encode(&mut out);
            // The client may be gone already; either way it is closed now.
            let _ = self.stream.send(&out).await;
            return Err(ClientError::Gone);
        }
        let error = match ended {
            Some(_) => e.to_client(),
            None => PgError::error("08006", format!("{e}; the statement did not complete")),
        };
        let mut out = BytesMut::new();
        if flow.replies.owed() > 0 {
            for i in 0..flow.replies.owed() {
                // The request being answered may have had its error already.
                if i > 0 || !flow.failed {
                    match ended {
                        Some(fatal) => fatal.encode_as_error(&mut out),
                        None => error.encode(&mut out),
                    }
                }
                messages::ready_for_query(&mut out, b'I');
            }
            self.stream.send(&out).await?;
            if flow.batch || !self.scanner.at_boundary() {
                return self.reject(error, true).await;
            }
            return Ok(());
        }
        // Mid-batch with nothing owed yet: the error goes with the rest of the batch.
        self.reject(error, false).await
    }
}
