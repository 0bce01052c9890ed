//! LISTEN and UNLISTEN of a transaction-mode client, answered by the pooler (a LISTEN run
//! on a server would end with the client's transaction, when the server goes back to the
//! pool): the client's channels are kept by its pool's notification hub
//! ([`crate::pool::notify`]), and what arrives for it waits in its queue until the client
//! is between transactions, where PostgreSQL too delivers notifications.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pgcat_parser::{named_statement, NamedStatement};
use tokio::sync::mpsc;

use crate::pool::notify::{Hub, Queue, CLIENT_QUEUE};
use crate::wire::messages::PgError;

/// A LISTEN or UNLISTEN statement.
#[derive(Debug, PartialEq, Eq)]
pub enum Listen {
    On(String),
    /// A channel, or (`None`) `UNLISTEN *`.
    Off(Option<String>),
}

impl Listen {
    /// The command tag PostgreSQL answers it with.
    pub fn tag(&self) -> &'static str {
        match self {
            Listen::On(_) => "LISTEN",
            Listen::Off(_) => "UNLISTEN",
        }
    }
}

/// `sql` as one LISTEN or UNLISTEN statement (an unquoted channel folded to lower case, a
/// quoted one as written), or `None`.
pub fn parse(sql: &str) -> Option<Listen> {
    match named_statement(sql)? {
        NamedStatement::Listen(channel) => Some(Listen::On(channel)),
        NamedStatement::Unlisten(channel) => Some(Listen::Off(channel)),
        _ => None,
    }
}

/// A client that listens: its queue, and its place in the hub (left when it goes).
pub struct Listening {
    hub: Arc<Hub>,
    client: u64,
    queue: Queue,
    inbox: mpsc::Receiver<Bytes>,
    /// Notifications taken from the inbox, not yet sent.
    arrived: BytesMut,
}

impl Listening {
    pub fn new(hub: Arc<Hub>, client: u64) -> Listening {
        let (queue, inbox) = mpsc::channel(CLIENT_QUEUE);
        Listening {
            hub,
            client,
            queue,
            inbox,
            arrived: BytesMut::new(),
        }
    }

    /// Applies a LISTEN or UNLISTEN; a LISTEN returns once the pooler's listening
    /// connection runs it (within `limit`: an error after it, and the LISTEN is undone).
    pub async fn apply(&mut self, listen: &Listen, limit: Duration) -> Result<(), PgError> {
        match listen {
            Listen::On(channel) => {
                let done = self.hub.listen(self.client, &self.queue, channel);
                if tokio::time::timeout(limit, done).await.is_err() {
                    self.hub.unlisten(self.client, Some(channel));
                    return Err(PgError::error(
                        "08006",
                        format!(
                            "could not LISTEN on \"{channel}\": the pooler's listening connection did not answer within {} ms",
                            limit.as_millis()
                        ),
                    ));
                }
            }
            Listen::Off(channel) => self.hub.unlisten(self.client, channel.as_deref()),
        }
        Ok(())
    }

    /// Ready when a notification arrived (the idle client's wait).
    pub fn poll_arrived(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.arrived.is_empty() {
            return Poll::Ready(());
        }
        match self.inbox.poll_recv(cx) {
            Poll::Ready(Some(message)) => {
                self.arrived.extend_from_slice(&message);
                Poll::Ready(())
            }
            // The hub holds a sender as long as it lists us; and we hold one too.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// Every notification that arrived, to send now.
    pub fn take(&mut self) -> BytesMut {
        while let Ok(message) = self.inbox.try_recv() {
            self.arrived.extend_from_slice(&message);
        }
        std::mem::take(&mut self.arrived)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.hub.unlisten(self.client, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_statements_are_read_as_postgresql_reads_them() {
        assert_eq!(parse("LISTEN foo"), Some(Listen::On("foo".into())));
        assert_eq!(parse(" listen Foo ;"), Some(Listen::On("foo".into())));
        assert_eq!(
            parse("LISTEN \"Foo Bar\""),
            Some(Listen::On("Foo Bar".into()))
        );
        assert_eq!(parse("UNLISTEN foo"), Some(Listen::Off(Some("foo".into()))));
        assert_eq!(parse("unlisten *"), Some(Listen::Off(None)));
        assert_eq!(parse("LISTEN *"), None);
        assert_eq!(parse("LISTEN a; SELECT 1"), None);
        assert_eq!(parse("LISTEN 1a"), None);
        assert_eq!(parse("NOTIFY foo"), None);
    }
}
