//! espinnet: X-ray multi-contrast imaging from scanned modulated patterns.
//!
//! From a reference stack (the scanned pattern without sample) and a sample stack (the same
//! scan with the sample), recover the pattern displacement, transmission, dark-field,
//! refraction angles and phase, with either engine through one [`Engine`]. Conventions
//! and units: `docs/design.md`; layering: `docs/architecture.md`.

pub mod capi;
#[cfg(feature = "cpp")]
pub mod cpp;
pub mod engine;
pub mod error;
pub mod geometry;
pub mod integrate;
pub mod metrics;
pub mod model;
pub mod network;
pub mod progress;
pub mod series;
pub mod stack;
pub mod tracking;

mod guard;
mod interpolate;
mod memory;
mod neighbourhood;
mod transform2d;

pub use engine::{Engine, EngineKind, MAP_INFO, MapInfo, Maps, MapsMut, Options};
pub use error::{Error, Result};
pub use geometry::Geometry;
pub use stack::ScanScaling;
pub mod io;
pub mod simulate;
