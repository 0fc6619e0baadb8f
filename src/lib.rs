//! synthcti: a declarative experiment runner for ATT&CK technique classification of CTI
//! sentences, with and without synthetic data.
//!
//! A manifest ([`manifest`]) expands into grid cells; each cell is a chain of stages — load
//! ([`data`]), split ([`split`]), train ([`model`]), evaluate ([`metrics`]) — run through a
//! content-addressed cache ([`cache`]) by the [`pipeline`], and summarised by [`report`].

pub mod cache;
pub mod data;
pub mod error;
pub mod features;
pub mod hash;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod split;

pub use error::{Error, ErrorKind, Result};
