//! LISTEN/NOTIFY for transaction-mode clients. A LISTEN sent to a server would last only
//! as long as the client holds that server (one transaction), so the pooler answers LISTEN
//! and UNLISTEN itself and keeps one listening connection per pool user, to the primary of
//! its first shard, LISTENing on the union of its clients' channels. Each
//! NotificationResponse (with the sending backend's pid) is copied to every client
//! listening on its channel, into a bounded queue per client: a client that does not read
//! never blocks the others (what does not fit is dropped, logged and counted). The
//! connection is opened with the first LISTEN, closed after the last UNLISTEN, and opened
//! again (LISTENing anew) when it is lost; notifications sent meanwhile are lost, as they
//! are for a direct connection that is lost.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, Notify};

use super::UserPool;
use crate::backend::{self, quote_ident, ServerTarget, TcpSettings};
use crate::config::Role;

/// Notifications a client has not been sent yet, at most.
pub const CLIENT_QUEUE: usize = 1024;

/// The application_name of the listening connections.
const LISTENER_APPLICATION_NAME: &str = "pgcat_listener";

/// Where a client's notifications go: whole NotificationResponse messages.
pub type Queue = mpsc::Sender<Bytes>;

/// The listening connection of one pool user and who listens on what.
pub struct Hub {
    target: ServerTarget,
    tcp: TcpSettings,
    state: Mutex<State>,
    /// Wakes the listening task: channels changed.
    changed: Notify,
    /// Notifications dropped because a client's queue was full (the count is logged).
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Channel → the clients listening there (client id, queue).
    channels: HashMap<String, Vec<(u64, Queue)>>,
    /// LISTEN (true) / UNLISTEN (false) the listening connection has yet to send.
    pending: Vec<(String, bool)>,
    /// Told when the next batch of LISTENs sent has been answered.
    waiting: Vec<oneshot::Sender<()>>,
    /// The listening task runs.
    running: bool,
}

impl UserPool {
    /// This pool user's notification hub (made on first use).
    pub fn notifications(&self) -> &Arc<Hub> {
        self.notify_hub.get_or_init(|| {
            let first = &self.shards[0];
            let primary = first
                .iter()
                .find(|a| a.role == Role::Primary)
                .unwrap_or(&first[0]);
            Arc::new(Hub {
                target: primary.pool.manager().target.clone(),
                tcp: self.tcp.clone(),
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                dropped: AtomicU64::new(0),
            })
        })
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Client `client` listens on `channel`; its notifications go to `queue`. The receiver
    /// is told (or dropped, if the connection was lost meanwhile) once the listening
    /// connection's LISTEN ran, from when on nothing sent on the channel is missed.
    pub fn listen(
        self: &Arc<Self>,
        client: u64,
        queue: &Queue,
        channel: &str,
    ) -> oneshot::Receiver<()> {
        let mut st = self.lock();
        let listeners = st.channels.entry(channel.to_string()).or_default();
        if !listeners.iter().any(|(c, _)| *c == client) {
            listeners.push((client, queue.clone()));
        }
        // The first listener's LISTEN may still be on its way: wait for the next answer.
        let (told, done) = oneshot::channel();
        st.waiting.push(told);
        st.pending.push((channel.to_string(), true));
        if !st.running {
            st.running = true;
            tokio::spawn(listen_loop(self.clone()));
        }
        drop(st);
        self.changed.notify_one();
        done
    }

    /// Client `client` stops listening on `channel` (`None`: on every channel, as
    /// `UNLISTEN *` and a client's exit do).
    pub fn unlisten(&self, client: u64, channel: Option<&str>) {
        let mut st = self.lock();
        let State {
            channels, pending, ..
        } = &mut *st;
        channels.retain(|name, listeners| {
            if channel.is_none_or(|c| c == name) {
                listeners.retain(|(c, _)| *c != client);
            }
            if listeners.is_empty() {
                pending.push((name.clone(), false));
                return false;
            }
            true
        });
        drop(st);
        self.changed.notify_one();
    }

    /// Copies a NotificationResponse (its body: pid, channel, payload) to the channel's
    /// listeners.
    fn dispatch(&self, body: &[u8]) {
        let Some(channel) = body
            .get(4..)
            .and_then(|rest| rest.split(|b| *b == 0).next())
        else {
            return;
        };
        let channel = String::from_utf8_lossy(channel);
        let mut message = BytesMut::with_capacity(body.len() + 5);
        message.put_u8(b'A');
        message.put_u32(body.len() as u32 + 4);
        message.extend_from_slice(body);
        let message = message.freeze();
        let st = self.lock();
        for (client, queue) in st.channels.get(&*channel).into_iter().flatten() {
            if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(message.clone()) {
                let dropped = self.dropped.fetch_add(1, Relaxed) + 1;
                tracing::warn!(client, %channel, dropped, "a client's notification queue is full; notification dropped");
            }
        }
    }
}

/// The listening connection: opened with the first channel, LISTENs and UNLISTENs as
/// clients come and go, hands on notifications; reconnects when lost; ends when no
/// channel is left.
async fn listen_loop(hub: Arc<Hub>) {
    loop {
        let mut conn = match backend::connect_as(
            &hub.target,
            &hub.tcp,
            Some(LISTENER_APPLICATION_NAME),
        )
        .await
        {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(server = %hub.target.addr(), error = %e, "could not open the LISTEN connection; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if stopped(&hub) {
                    return;
                }
                continue;
            }
        };
        // A new connection listens on every channel wanted now.
        {
            let mut st = hub.lock();
            let every: Vec<(String, bool)> =
                st.channels.keys().map(|c| (c.clone(), true)).collect();
            st.pending = every;
        }
        // Per batch sent, who waits for its answer (ReadyForQuery).
        let mut in_flight: VecDeque<Vec<oneshot::Sender<()>>> = VecDeque::new();
        loop {
            let (commands, waiting) = {
                let mut st = hub.lock();
                (
                    std::mem::take(&mut st.pending),
                    std::mem::take(&mut st.waiting),
                )
            };
            if stopped(&hub) {
                return;
            }
            if !commands.is_empty() {
                in_flight.push_back(waiting);
                let sql: String = commands
                    .iter()
                    .map(|(channel, on)| {
                        let verb = if *on { "LISTEN" } else { "UNLISTEN" };
                        format!("{verb} {};", quote_ident(channel))
                    })
                    .collect();
                let mut query = BytesMut::new();
                crate::wire::messages::query(&mut query, &[sql.as_bytes()]);
                if let Err(e) = conn.write_all(&query).await {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
            tokio::select! {
                _ = hub.changed.notified() => {}
                message = conn.read_message() => match message {
                    Ok((b'A', body)) => hub.dispatch(&body),
                    Ok((b'Z', _)) => {
                        for told in in_flight.pop_front().unwrap_or_default() {
                            let _ = told.send(());
                        }
                    }
                    Ok((b'E', body)) => {
                        let e = crate::wire::messages::PgError::from_fields(&body);
                        tracing::warn!(error = %e, "the LISTEN connection reported an error");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        break;
                    }
                },
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No channel is left: the task ends (a later LISTEN starts another).
fn stopped(hub: &Hub) -> bool {
    let mut st = hub.lock();
    if st.channels.is_empty() {
        st.running = false;
        st.pending.clear();
        st.waiting.clear();
        return true;
    }
    false
}
