//! `COPY … TO STDOUT` on every shard, merged: one CopyOutResponse, every shard's data
//! with the header once (the binary header, or a text or CSV header line) and one binary
//! trailer at the end, which `Merge::finish` writes with the CopyDone.

use bytes::BytesMut;

use crate::wire::messages;

/// COPY … TO STDOUT being merged.
#[derive(Default)]
pub(super) struct CopyOut {
    binary: bool,
    header: bool,
    /// The client got its CopyOutResponse.
    responded: bool,
    /// The shards whose first CopyData (with the header) came, in order.
    started: Vec<usize>,
}

/// The binary COPY header: signature, flags, extension length (PostgreSQL sends no
/// extension).
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

impl CopyOut {
    pub(super) fn new(binary: bool, header: bool) -> CopyOut {
        CopyOut {
            binary,
            header,
            ..CopyOut::default()
        }
    }

    /// The data is binary (its trailer ends the whole).
    pub(super) fn binary(&self) -> bool {
        self.binary
    }

    /// A shard's CopyOutResponse (the first one is the client's) or CopyData: each
    /// shard's header after the first dropped, and every binary trailer (one ends the
    /// whole).
    pub(super) fn on_message(&mut self, shard: usize, tag: u8, body: &[u8], out: &mut BytesMut) {
        if tag == b'H' {
            if !self.responded {
                messages::message(out, b'H', |m| m.extend_from_slice(body));
                self.responded = true;
            }
            return;
        }
        let first = !self.started.contains(&shard);
        if first {
            self.started.push(shard);
        }
        // Not the first shard whose data came: its header is a repeat.
        let later = self.started.len() > 1;
        let mut data = body;
        if self.binary {
            if data == [0xff, 0xff] {
                return;
            }
            if first && later {
                data = data.strip_prefix(BINARY_HEADER).unwrap_or(data);
            }
        } else if self.header && first && later {
            // The header line comes alone, as the first CopyData.
            return;
        }
        if !data.is_empty() {
            messages::message(out, b'd', |m| m.extend_from_slice(data));
        }
    }
}
