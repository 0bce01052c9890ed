//! The PostgreSQL wire protocol as the pooler needs it: framing by a 5-byte header scan
//! (`frame`), the startup packets clients send before the message stream (`startup`) and
//! the messages the pooler writes itself (`messages`). No I/O policy lives here beyond
//! reading one startup packet; relaying is the frontend's job.

pub mod bind;
pub mod frame;
pub mod messages;
pub mod startup;

pub use frame::{FrameError, Scanner};
