//! Renderers: events, connections, ladder diagrams, JSON lines, summary.
pub mod conns;
pub mod events;
pub mod explain;
pub mod json;
pub mod ladder;
pub mod summary;
