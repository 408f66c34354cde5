//! Renderers: events, connections, ladder diagrams, SVG pictures, JSON lines, summary.
pub mod colour;
pub mod conns;
pub mod events;
pub mod explain;
pub mod json;
pub mod ladder;
pub mod summary;
pub mod svg;
