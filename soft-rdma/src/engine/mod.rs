//! The protocol engine, by role (as in rxe): [`requester`] sends, [`responder`]
//! executes what arrives, [`completer`] turns acknowledgements into
//! completions; [`rx`] and [`timer`] are the two device threads; [`packet`]
//! builds packets and moves data between packets and scatter/gather lists.
//!
//! Progress model: transmission happens inline in `post_send` (the caller's
//! thread) — or, for a small post behind packets in flight while the
//! application polls, at its next poll, batched with the posts after it
//! ([`doorbell`]); arriving traffic is handled inline by an application
//! thread that polls an empty CQ, and otherwise by the receive thread, which
//! blocks in `Link::wait` and is not woken while an application polls
//! ([`rx`]); timers sleep until their deadline. No thread busy-polls.

pub(crate) mod completer;
pub(crate) mod doorbell;
pub(crate) mod packet;
pub(crate) mod psn;
pub(crate) mod requester;
pub(crate) mod responder;
pub(crate) mod rx;
pub(crate) mod timer;
