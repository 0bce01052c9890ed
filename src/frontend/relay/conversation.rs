//! Holding a server: the relay loop between a client and the server it holds (giving it
//! back is the pool's: `pool::checkin`).

use super::*;

impl Client {
    /// Relays between the client and `server` until one of the ends in [`End`]. A ban of
    /// the server's address during the relay ends it too.
    pub(super) async fn relay(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        server_scan: &mut Scanner,
    ) -> End {
        // A ban of the address raises BANNED on the clients relaying there.
        let address = server.session().health_id();
        self.session.info.interrupt.relay_to(address);
        let end = self.relay_until(server, flow, server_scan).await;
        self.session.info.interrupt.relay_to(0);
        end
    }

    async fn relay_until(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        server_scan: &mut Scanner,
    ) -> End {
        let mode = self.session.pool.mode;
        let idle_in_transaction = self.app.config().general.idle_client_in_transaction_timeout;
        if let Some(end) = self.forward_client(server, flow, server_scan).await {
            return end;
        }
        loop {
            let settled = flow.settled() && self.scanner.at_boundary();
            if mode == PoolMode::Transaction
                && settled
                && !(self.mode == Mode::Pin && self.statements.pins())
                && flow.status == b'I'
                && server.io().received().is_empty()
                && server_scan.at_boundary()
            {
                if !self.pinned_by(server) {
                    // Anything the client already sent is a new request: routed afresh.
                    return End::Released;
                }
                self.session.info.set_state(ClientState::Pinned, now_us);
            }
            if settled && self.has_complete_message() {
                // Requests held back behind an SQL extension (see `extension_cut`).
                if let Some(end) = self.forward_client(server, flow, server_scan).await {
                    return end;
                }
                continue;
            }
            crate::net::make_room(&mut self.buf);
            // A client idle inside a transaction holds a server: bounded by
            // idle_client_in_transaction_timeout.
            let idle_limit = (settled && flow.status != b'I' && idle_in_transaction > 0)
                .then(|| std::time::Duration::from_millis(idle_in_transaction));
            tokio::select! {
                _ = async { match idle_limit {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                } } => return End::IdleInTransaction,
                r = self.stream.read_buf(&mut self.buf) => match r {
                    Ok(0) | Err(_) => return End::ClientGone,
                    Ok(_) => {
                        if let Some(end) = self.forward_client(server, flow, server_scan).await {
                            return end;
                        }
                    }
                },
                raised = self.session.info.interrupt.wait(Interrupt::KILLED | Interrupt::BANNED) => {
                    if raised & Interrupt::KILLED != 0 {
                        return End::Fatal(killed_error_pg());
                    }
                    // The address was banned (health check failed, or an operator's BAN):
                    // whatever is in flight there fails now rather than hang.
                    let session = server.session();
                    let (addr, reason) = (session.addr().to_string(), session.ban_reason());
                    return End::ServerGone(BackendError::Banned { addr, reason });
                }
                r = server.io().read_more() => match r {
                    Err(e) => return End::ServerGone(e),
                    Ok(()) => {
                        if let Some(end) = self.forward_server(server, flow, server_scan).await {
                            return end;
                        }
                    }
                },
            }
        }
    }

    /// Session state the server keeps for this client (a temporary table, a WITH HOLD
    /// cursor, a session advisory lock, a statement of SQL `PREPARE`) holds the server
    /// between transactions, with `pin_session_state`, until a reset command clears it or
    /// the client leaves. (With the statement cache off, protocol-level statements pin
    /// their server on their own: `Mode::Pin`.)
    fn pinned_by(&self, server: &ServerConn) -> bool {
        let d = server.session().dirty();
        let prepared = d.prepared && self.mode == Mode::Rewrite;
        self.session.pool.pin_session_state && (d.temp || d.cursors || d.advisory || prepared)
    }
}
