//! A client's side of an online upgrade (see `frontend::handover`): whether it can move
//! now, its state written out with its socket, and a client rebuilt from that state.

use std::os::fd::OwnedFd;

use super::*;
use crate::frontend::handover::Moved;

impl Client {
    /// Idle with nothing that ties it to this process: no transaction block held, no
    /// block across shards, no LISTEN, a plain socket.
    pub(super) fn movable(&self) -> bool {
        self.held_begin.is_none()
            && self.spread().is_none()
            && self.rare.as_ref().is_none_or(|r| r.listening.is_none())
            && matches!(self.stream, Stream::Tcp(_) | Stream::Unix(_))
    }

    /// The client's socket and its state for the new process (its record here goes with
    /// it: the new process registers the same cancel key).
    pub(in crate::frontend) fn export(self: Box<Self>) -> Result<(OwnedFd, Vec<u8>), PgError> {
        let info = &self.session.info;
        let moved = Moved {
            database: info.database.to_string(),
            user: info.user.to_string(),
            application_name: info.application_name.to_string(),
            peer: info.peer,
            pid: info.pid,
            secret: info.secret,
            params: self.session.params.clone(),
            startup_params: self.session.startup_params.clone(),
            routing: self.routing,
            statements: self.statements.exported(),
            command_statements: (self.command_statements.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            min_lsn: self.rare.as_ref().map_or(0, |r| r.min_lsn),
        };
        let bytes =
            serde_json::to_vec(&moved).map_err(|e| PgError::fatal("XX000", e.to_string()))?;
        let Client { stream, .. } = *self;
        let fd = stream.into_fd().map_err(|_| PgError::upgrading())?;
        Ok((fd, bytes))
    }

    /// Moves the client to the new process; when that cannot be (the new process is gone),
    /// it stays, served from its state as a moved client is. Counted in flight from before
    /// it leaves the registry until the upgrade's sender has written it (or it stayed), so
    /// the process does not exit in between.
    pub(super) fn hand_over(self: Box<Self>) {
        let app = self.app.clone();
        let tag = self.tag();
        app.handoff_begins();
        match self.export() {
            Ok(client) => {
                if let Err(client) = app.hand_over(client) {
                    crate::frontend::handover::serve_moved(app.clone(), client);
                    app.handoff_done();
                }
            }
            Err(e) => {
                app.handoff_done();
                tag.in_scope(
                    || tracing::warn!(error = %e.message, "could not hand the client over"),
                )
            }
        }
    }

    /// A client handed over by another process, idle.
    pub(in crate::frontend) fn from_moved(
        conn: Conn,
        session: Box<Session>,
        moved: Moved,
    ) -> Box<Client> {
        let epoch = session.pool.schema_epoch.get();
        let mut client = Client::new(conn, session, BytesMut::new());
        client.routing = moved.routing;
        client.statements.import(moved.statements, epoch);
        for (name, sql) in moved.command_statements {
            client.command_statements.insert(name, sql);
        }
        if moved.min_lsn > 0 {
            client.rare.get_or_insert_with(Default::default).min_lsn = moved.min_lsn;
        }
        client
    }
}
