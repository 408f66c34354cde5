//! tcp-trace: the TCP handshake and teardown as the kernel lives them.
//!
//! Pipeline, one module per stage: [`loader`] (load, attach, probe) → [`source`]
//! (ring buffer → records) → [`decode`] (records → [`decode::Event`]) →
//! [`correlate`] (events → connections; pure) → [`render`].
pub mod cli;
pub mod clock;
pub mod container;
pub mod correlate;
pub mod decode;
pub mod explain;
pub mod heap;
pub mod inflight;
pub mod lab;
pub mod layout;
pub mod loader;
pub mod metrics;
pub mod pipeline;
pub mod privilege;
pub mod record;
pub mod render;
pub mod sockdiag;
pub mod source;
pub mod text;
pub mod trace;
