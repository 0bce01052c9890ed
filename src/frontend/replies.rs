//! Which server reply belongs to which client request.
//!
//! Every client message that gets an answer pushes an [`Expect`] in order. Server replies
//! complete them front to back; replies the pooler made up (CloseComplete for a Close it
//! answers itself) sit in the queue and go out as soon as everything before them has been
//! answered, and replies to messages the pooler added itself (a Parse preparing a statement
//! on this server, a Close evicting or replacing one) are swallowed. After an ErrorResponse in the extended protocol
//! PostgreSQL skips to the next Sync, and so does the queue.

use std::collections::VecDeque;
use std::sync::Arc;

/// One answer the client (or the pooler) waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// ParseComplete for a forwarded Parse: the server statement it creates and the
    /// client's name for it, for named statements.
    Parse(Option<(Arc<str>, Arc<str>)>),
    Bind,
    DescribeStatement,
    DescribePortal,
    Execute,
    Close,
    Sync,
    Query,
    FunctionCall,
    /// A reply the pooler sends itself (its tag: '3' CloseComplete for a Close it answers).
    Synth(u8),
    /// ParseComplete of a Parse the pooler added to prepare a statement; swallowed.
    SwallowParse(Arc<str>),
    /// CloseComplete of a Close the pooler added to evict a statement; swallowed.
    SwallowClose,
    /// Every reply to a Query the pooler already answered (a held-back BEGIN), through its
    /// ReadyForQuery; swallowed.
    SwallowQuery,
    /// Every reply to a Query the pooler added to prepare a statement with SQL `PREPARE`
    /// (server name), through its ReadyForQuery; swallowed.
    SwallowPrepare(Arc<str>),
    /// No reply of its own: the request before it (a Query, or an Execute) runs SQL
    /// `PREPARE` of this statement (server name, client name), which exists once that
    /// request succeeds.
    Defines(Arc<str>, Arc<str>),
}

/// What became of a statement the pooler was tracking.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The server prepared this statement (server name).
    Prepared(&'a Arc<str>),
    /// The server does not have this statement after all (server name).
    Failed(&'a Arc<str>),
    /// The client's Parse of this name failed or was skipped: the name does not exist.
    Undefined(&'a Arc<str>),
}

/// What to do with one server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Forward,
    Swallow,
}

#[derive(Debug, Default)]
pub struct Replies {
    queue: VecDeque<Expect>,
    /// ReadyForQuery messages owed (Sync, Query and FunctionCall entries queued).
    owed: usize,
    /// The Query at the front got an ErrorResponse.
    query_failed: bool,
    /// An extended-protocol SQL `PREPARE` parsed (server name, client name): it runs at
    /// the client's next Execute.
    prepare_at_execute: Option<(Arc<str>, Arc<str>)>,
    /// The server reported an error in an extended batch whose Sync the client has not
    /// sent yet: it ignores everything up to that Sync, so what arrives meanwhile gets no
    /// reply (kept here to report the statements that were never prepared).
    skipping: bool,
    skipped: Vec<Expect>,
}

impl Replies {
    /// Room for an extended batch's replies (Parse, Bind, Describe, Execute, Sync) without
    /// growing.
    pub fn for_batch() -> Replies {
        Replies {
            queue: VecDeque::with_capacity(8),
            ..Replies::default()
        }
    }

    pub fn push(&mut self, e: Expect) {
        if self.skipping {
            if e != Expect::Sync {
                self.skipped.push(e);
                return;
            }
            self.skipping = false;
        }
        if matches!(e, Expect::Sync | Expect::Query | Expect::FunctionCall) {
            self.owed += 1;
        }
        self.queue.push_back(e);
    }

    /// The Parse just pushed is SQL `PREPARE` of this statement (server name, client
    /// name): it exists once the client's next Execute succeeds.
    pub fn defines_at_execute(&mut self, server: Arc<str>, client: Arc<str>) {
        self.prepare_at_execute = Some((server, client));
    }

    /// The client's Execute: its reply, and the statement it defines, if any.
    pub fn push_execute(&mut self) {
        self.push(Expect::Execute);
        if let Some((server, client)) = self.prepare_at_execute.take() {
            self.push(Expect::Defines(server, client));
        }
    }

    /// The client's Sync; `never_ran` is told of an SQL `PREPARE` parsed but not
    /// executed (server name, client name): it made nothing.
    pub fn push_sync(&mut self, never_ran: impl FnOnce(&Arc<str>, &Arc<str>)) {
        if let Some((server, client)) = self.prepare_at_execute.take() {
            never_ran(&server, &client);
        }
        self.push(Expect::Sync);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn owed(&self) -> usize {
        self.owed
    }

    fn pop(&mut self) -> Option<Expect> {
        let e = self.queue.pop_front()?;
        if matches!(e, Expect::Sync | Expect::Query | Expect::FunctionCall) {
            self.owed -= 1;
        }
        Some(e)
    }

    /// Some reply in flight is one the pooler swallows: the server's messages must be read
    /// whole until it has passed.
    pub fn swallows(&self) -> bool {
        self.queue.iter().any(|e| {
            matches!(
                e,
                Expect::SwallowParse(_)
                    | Expect::SwallowClose
                    | Expect::SwallowQuery
                    | Expect::SwallowPrepare(_)
            )
        })
    }

    /// The next reply answers a BEGIN the pooler held back (and already answered itself).
    pub fn awaits_held_begin(&self) -> bool {
        self.queue.front() == Some(&Expect::SwallowQuery)
    }

    /// Takes the made-up replies now at the front of the queue.
    pub fn take_synth(&mut self, mut emit: impl FnMut(u8)) {
        while let Some(Expect::Synth(tag)) = self.queue.front() {
            emit(*tag);
            self.pop();
        }
    }

    /// Accounts for one server message. `statement` is told what became of the statements
    /// in flight: prepared, or not existing after all (the Parse failed or was skipped
    /// after an error).
    pub fn on_server(&mut self, tag: u8, mut statement: impl FnMut(Event<'_>)) -> Action {
        if !self.skipped.is_empty() {
            for e in std::mem::take(&mut self.skipped) {
                forget(&e, &mut statement);
            }
        }
        let Some(head) = self.queue.front() else {
            return Action::Forward;
        };
        let completes = match (head, tag) {
            (Expect::Parse(_), b'1') | (Expect::Bind, b'2') | (Expect::Close, b'3') => true,
            (Expect::DescribeStatement | Expect::DescribePortal, b'T' | b'n') => true,
            (Expect::Execute, b'C' | b'I' | b's') => true,
            (Expect::Sync | Expect::Query | Expect::FunctionCall, b'Z') => true,
            (Expect::SwallowParse(name), b'1') => {
                statement(Event::Prepared(name));
                self.pop();
                return Action::Swallow;
            }
            (Expect::SwallowClose, b'3') => {
                self.pop();
                return Action::Swallow;
            }
            (Expect::SwallowQuery | Expect::SwallowPrepare(_), b'N' | b'S' | b'A') => {
                return Action::Forward
            }
            (Expect::SwallowQuery | Expect::SwallowPrepare(_), b'Z') => {
                self.pop();
                return Action::Swallow;
            }
            (Expect::SwallowPrepare(name), b'E') => {
                statement(Event::Failed(name));
                return Action::Swallow;
            }
            (Expect::SwallowQuery | Expect::SwallowPrepare(_), _) => return Action::Swallow,
            (_, b'E') => {
                if matches!(head, Expect::Query) {
                    self.query_failed = true;
                } else if !matches!(head, Expect::FunctionCall | Expect::Sync) {
                    self.skip_to_sync(&mut statement);
                }
                false
            }
            _ => false,
        };
        if completes {
            let done = self.pop();
            if let Some(Expect::Parse(Some((name, _)))) = &done {
                statement(Event::Prepared(name));
            }
            let failed = done == Some(Expect::Query) && std::mem::take(&mut self.query_failed);
            while let Some(Expect::Defines(name, client)) = self.queue.front() {
                if failed {
                    statement(Event::Failed(name));
                    statement(Event::Undefined(client));
                } else {
                    statement(Event::Prepared(name));
                }
                self.pop();
            }
        }
        Action::Forward
    }

    /// After an error in an extended batch: everything up to the Sync was skipped.
    fn skip_to_sync(&mut self, statement: &mut impl FnMut(Event<'_>)) {
        while let Some(head) = self.queue.front() {
            if *head == Expect::Sync {
                return;
            }
            forget(head, statement);
            self.pop();
        }
        // The Sync is still to come from the client.
        self.skipping = true;
    }
}

/// Reports what an entry the server skipped leaves undone: statements not prepared.
fn forget(e: &Expect, statement: &mut impl FnMut(Event<'_>)) {
    match e {
        Expect::Parse(Some((name, client))) => {
            statement(Event::Failed(name));
            statement(Event::Undefined(client));
        }
        Expect::SwallowParse(name) | Expect::SwallowPrepare(name) => statement(Event::Failed(name)),
        Expect::Defines(name, client) => {
            statement(Event::Failed(name));
            statement(Event::Undefined(client));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_sent_after_an_error_but_before_their_sync_get_no_replies() {
        let mut r = Replies::default();
        let a: Arc<str> = "pgcat_a".into();
        r.push(Expect::Bind);
        r.push(Expect::Execute);
        // The server fails the Execute before the rest of the batch was even forwarded.
        r.on_server(b'2', |_| {});
        r.on_server(b'E', |_| {});
        assert!(r.is_empty());
        r.push(Expect::Parse(Some((a.clone(), "s3".into()))));
        r.push(Expect::Bind);
        r.push(Expect::Synth(b'3'));
        r.push(Expect::Sync);
        let mut events = Vec::new();
        let mut synth = Vec::new();
        r.take_synth(|t| synth.push(t));
        assert!(synth.is_empty());
        r.on_server(b'Z', |e| events.push(format!("{e:?}")));
        assert!(r.is_empty(), "{r:?}");
        assert_eq!(events.len(), 2, "{events:?}");
        // The next request is tracked normally.
        r.push(Expect::Synth(b'3'));
        r.push(Expect::Sync);
        r.take_synth(|t| synth.push(t));
        assert_eq!(synth, vec![b'3']);
    }

    #[test]
    fn made_up_replies_keep_their_place() {
        let mut r = Replies::default();
        r.push(Expect::Synth(b'3'));
        r.push(Expect::Bind);
        r.push(Expect::Synth(b'3'));
        r.push(Expect::Sync);
        let mut out = Vec::new();
        r.take_synth(|t| out.push(t));
        assert_eq!(out, vec![b'3']);
        assert_eq!(r.on_server(b'2', |_| {}), Action::Forward);
        r.take_synth(|t| out.push(t));
        assert_eq!(out, vec![b'3', b'3']);
        assert_eq!(r.owed(), 1);
        r.on_server(b'Z', |_| {});
        assert!(r.is_empty());
        assert_eq!(r.owed(), 0);
    }

    #[test]
    fn an_error_skips_to_sync_and_forgets_unprepared_statements() {
        let mut r = Replies::default();
        let a: Arc<str> = "pgcat_a".into();
        let b: Arc<str> = "pgcat_b".into();
        r.push(Expect::SwallowParse(a.clone()));
        r.push(Expect::Bind);
        r.push(Expect::Execute);
        r.push(Expect::Parse(Some((b.clone(), "s1".into()))));
        r.push(Expect::Synth(b'3'));
        r.push(Expect::Sync);
        r.push(Expect::Query);
        assert_eq!(r.on_server(b'1', |_| {}), Action::Swallow);
        assert_eq!(r.on_server(b'2', |_| {}), Action::Forward);
        let mut forgotten = Vec::new();
        let mut undefined = Vec::new();
        assert_eq!(
            r.on_server(b'E', |e| match e {
                Event::Failed(n) => forgotten.push(n.clone()),
                Event::Undefined(c) => undefined.push(c.clone()),
                Event::Prepared(_) => {}
            }),
            Action::Forward
        );
        assert_eq!(forgotten, vec![b]);
        let s1: Arc<str> = "s1".into();
        assert_eq!(undefined, vec![s1]);
        let mut synth = Vec::new();
        r.take_synth(|t| synth.push(t));
        assert!(
            synth.is_empty(),
            "nothing made up goes out before the Sync's reply"
        );
        r.on_server(b'Z', |_| {});
        assert_eq!(r.owed(), 1);
        r.on_server(b'E', |_| {});
        r.on_server(b'Z', |_| {});
        assert!(r.is_empty());
    }

    /// SQL PREPARE makes its statement once the Query, or the Execute, that runs it
    /// succeeds; an error (or a Sync without Execute) leaves nothing.
    #[test]
    fn sql_prepare_defines_its_statement_when_it_succeeds() {
        let (s, c): (Arc<str>, Arc<str>) = ("pgcat_sql_a".into(), "a".into());
        let events = |r: &mut Replies, tags: &[u8]| {
            let mut seen = Vec::new();
            for t in tags {
                r.on_server(*t, |e| seen.push(format!("{e:?}")));
            }
            seen
        };
        let mut r = Replies::default();
        r.push(Expect::Query);
        r.push(Expect::Defines(s.clone(), c.clone()));
        assert_eq!(events(&mut r, b"C"), Vec::<String>::new());
        assert_eq!(events(&mut r, b"Z"), vec!["Prepared(\"pgcat_sql_a\")"]);
        r.push(Expect::Query);
        r.push(Expect::Defines(s.clone(), c.clone()));
        assert_eq!(
            events(&mut r, b"EZ"),
            vec!["Failed(\"pgcat_sql_a\")", "Undefined(\"a\")"]
        );
        // Extended: Parse, Bind, Execute, Sync.
        r.push(Expect::Parse(None));
        r.defines_at_execute(s.clone(), c.clone());
        r.push(Expect::Bind);
        r.push_execute();
        r.push_sync(|_, _| panic!("it ran"));
        assert_eq!(events(&mut r, b"12C"), vec!["Prepared(\"pgcat_sql_a\")"]);
        assert_eq!(events(&mut r, b"Z"), Vec::<String>::new());
        r.push(Expect::Parse(None));
        r.defines_at_execute(s.clone(), c.clone());
        r.push(Expect::Bind);
        r.push_execute();
        r.push_sync(|_, _| panic!("it ran"));
        assert_eq!(
            events(&mut r, b"12EZ"),
            vec!["Failed(\"pgcat_sql_a\")", "Undefined(\"a\")"]
        );
        r.push(Expect::Parse(None));
        r.defines_at_execute(s.clone(), c.clone());
        let mut never = None;
        r.push_sync(|s, c| never = Some((s.clone(), c.clone())));
        assert_eq!(never, Some((s, c)));
        assert_eq!(r.owed(), 1);
    }
}
